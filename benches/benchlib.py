"""What the serve benchmarks share: an account's credentials from the emulator, and a
`bunker serve` started with them (the emulator's request counter reset first)."""
import os, subprocess, time, urllib.request

import boto3


def creds(account, region, role="bench"):
    """AssumeRole into `account` (as `role`): moto maps the returned keys to it, and the
    emulator counts each role's requests apart (`/_bunker/stats` `by_role`)."""
    c = boto3.client("sts", aws_access_key_id="x", aws_secret_access_key="x", region_name=region).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName=role)["Credentials"]
    return {"aws_access_key_id": c["AccessKeyId"], "aws_secret_access_key": c["SecretAccessKey"],
            "aws_session_token": c["SessionToken"]}


def start_serve(bunker, cfg, c, region, state):
    """Resets the emulator's counters, starts `bunker serve --config cfg` as the account of
    credentials `c`, waits for its listening line; returns (process, start time)."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=c["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=c["aws_secret_access_key"],
               AWS_SESSION_TOKEN=c["aws_session_token"], AWS_REGION=region, STATE_DIRECTORY=state)
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/_bunker/stats", method="POST"))
    t0 = time.monotonic()
    # The service's log goes beside its state (BUNKER_LOG=info for more than warnings).
    os.makedirs(state, exist_ok=True)
    log = open(os.path.join(state, "bunker.log"), "w")
    p = subprocess.Popen([bunker, "serve", "--config", cfg], env=env, stdout=subprocess.PIPE, stderr=log)
    p.stdout.readline()
    return p, t0
