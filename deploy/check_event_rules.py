"""Which of bunker's EventBridge rules match each event (run by tests/policies.rs).

For every event file given, prints one JSON object: the file name -> {"rules.json": [...],
"bunker.yaml": [...], "bunker-dr-events.yaml": [...]}, the names of the rules in
deploy/eventbridge/rules.json and of the AWS::Events::Rule resources of the two templates
whose event pattern matches it. The matching is moto's own EventBridge pattern matcher (the
emulator's; it implements AWS's pattern semantics: exact values, prefixes, nesting), so a
rule that would not route an event bunker acts on is caught before AWS drops it silently.

Usage: check_event_rules.py EVENT.json...
"""
import json
import os
import sys

from cfnlint.decode import decode
from moto.events.models import EventPattern

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def template_rules(path):
    """The event patterns of a template's AWS::Events::Rule resources, by resource id."""
    template, errors = decode(path)
    if errors or template is None:
        sys.exit(f"{path}: cannot be read: {errors}")
    return {rid: r["Properties"]["EventPattern"] for rid, r in template["Resources"].items()
            if r.get("Type") == "AWS::Events::Rule" and "EventPattern" in r.get("Properties", {})}


def main():
    with open(os.path.join(ROOT, "deploy/eventbridge/rules.json")) as f:
        sets = {"rules.json": json.load(f)["rules"]}
    for name in ("bunker.yaml", "bunker-dr-events.yaml"):
        sets[name] = template_rules(os.path.join(ROOT, "deploy/cloudformation", name))
    patterns = {s: {rid: EventPattern.load(json.dumps(p)) for rid, p in rules.items()} for s, rules in sets.items()}
    out = {}
    for path in sys.argv[1:]:
        with open(path) as f:
            event = json.load(f)
        out[os.path.basename(path)] = {s: sorted(rid for rid, p in ps.items() if p.matches_event(event))
                                       for s, ps in patterns.items()}
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
