"""EBS volumes that are real block devices, and the instance metadata service, for bunker's
file-level exports through a temporary volume (the restore actor).

moto 5.2.5 attaches a volume as a record: no device appears, and there is no IMDS. With this
module the emulator plays the hardware of the instance bunker runs on:

* A test registers a device directory for an account: ``POST /_bunker/devices`` with
  ``{"account": …, "dir": "/tmp/…/by-id"}`` (bunker's ``export.device_dir``).
* ``AttachVolume`` of a volume of that account builds an image file from the blocks of the
  snapshot the volume was created from (as written through the EBS direct APIs; zeros
  elsewhere, the volume's size), attaches it read-only as a loop device (``losetup``; the
  test machines run as root) and creates the symlink AWS's udev rules make on Nitro
  instances, ``<dir>/nvme-Amazon_Elastic_Block_Store_vol<hex>`` → ``/dev/loopN``.
* ``DetachVolume`` removes the symlink, the loop device and the image (moto already refuses
  to delete an attached volume). ``GET /_bunker/devices?account=…`` answers
  ``{"attached": [...], "detached": [...], "deleted": [...]}`` (volume ids), so a test can
  check the temporary volume went.
* IMDSv2: ``PUT /latest/api/token`` (with ``X-aws-ec2-metadata-token-ttl-seconds``) answers a
  token; ``GET /latest/meta-data/instance-id`` and ``…/placement/availability-zone`` answer
  the instance registered with ``POST /_bunker/imds`` ``{"account": …, "instance_id": …,
  "az": …}``, only with a valid token (401 without, as IMDSv2 requires). Each account's
  instance is also served under ``/_bunker/imds/<account>/latest/…``, so tests sharing one
  emulator each set ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` to their own prefix; the bare
  ``/latest/…`` serves the last registration (the demo).
"""

import json
import os
import secrets
import subprocess
import threading
import urllib.parse

LOCK = threading.RLock()
DEVICE_DIRS = {}  # account -> directory of by-id symlinks
ATTACHED = {}  # volume id -> {"loop": "/dev/loopN", "image": path, "link": path}
HISTORY = {}  # account -> {"attached": [...], "detached": [...], "deleted": [...]}
INSTANCES = {}  # account -> {"instance_id": …, "az": …}
LAST = {}  # the last registration (bare /latest/…)
TOKENS = set()
BLOCK = 524288


def link_name(volume_id):
    return "nvme-Amazon_Elastic_Block_Store_" + volume_id.replace("-", "")


def record(account, what, volume_id):
    with LOCK:
        HISTORY.setdefault(account, {"attached": [], "detached": [], "deleted": []})[what].append(volume_id)


def build_image(account, region, volume, path):
    """The volume's bytes: its snapshot's blocks over zeros (sparse)."""
    from moto.ebs.models import ebs_backends

    blocks = {}
    if volume.snapshot_id:
        snap = ebs_backends[account][region].snapshots.get(volume.snapshot_id)
        if snap is not None:
            blocks = snap.blocks
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, int(volume.size) * (1 << 30))
        for index, block in blocks.items():
            os.pwrite(fd, block.block_data, index * BLOCK)
    finally:
        os.close(fd)


def attach_device(backend, volume):
    """Loop device and by-id symlink for a volume of an account with a device directory."""
    account, region = backend.account_id, backend.region_name
    with LOCK:
        directory = DEVICE_DIRS.get(account)
    if directory is None:
        return
    image = os.path.join(directory, ".images", volume.id + ".img")
    os.makedirs(os.path.dirname(image), mode=0o700, exist_ok=True)
    build_image(account, region, volume, image)
    loop = subprocess.run(["losetup", "--find", "--show", "--read-only", image],
                          check=True, capture_output=True, text=True).stdout.strip()
    link = os.path.join(directory, link_name(volume.id))
    os.symlink(loop, link)
    with LOCK:
        ATTACHED[volume.id] = {"loop": loop, "image": image, "link": link}
    record(account, "attached", volume.id)


def detach_device(account, volume_id):
    with LOCK:
        dev = ATTACHED.pop(volume_id, None)
    if dev is None:
        return
    for step in (lambda: os.unlink(dev["link"]),
                 lambda: subprocess.run(["losetup", "--detach", dev["loop"]], check=True, capture_output=True),
                 lambda: os.unlink(dev["image"])):
        try:
            step()
        except (OSError, subprocess.CalledProcessError):
            pass
    record(account, "detached", volume_id)


def patch():
    from moto.ec2.models.elastic_block_store import EBSBackend

    original_attach = EBSBackend.attach_volume
    original_detach = EBSBackend.detach_volume
    original_delete = EBSBackend.delete_volume

    def attach_volume(self, volume_id, instance_id, device_path, delete_on_termination=False):
        attachment = original_attach(self, volume_id, instance_id, device_path, delete_on_termination)
        if attachment is not None:
            attach_device(self, self.get_volume(volume_id))
        return attachment

    def detach_volume(self, volume_id, instance_id, device_path):
        attachment = original_detach(self, volume_id, instance_id, device_path)
        detach_device(self.account_id, volume_id)
        return attachment

    def delete_volume(self, volume_id):
        volume = original_delete(self, volume_id)
        record(self.account_id, "deleted", volume_id)
        return volume

    EBSBackend.attach_volume = attach_volume
    EBSBackend.detach_volume = detach_volume
    EBSBackend.delete_volume = delete_volume


def control(environ, start_response, path):
    """``/_bunker/devices`` and ``/_bunker/imds`` registrations and reports."""
    if environ.get("REQUEST_METHOD") == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        ask = json.loads(environ["wsgi.input"].read(length) or b"{}")
        with LOCK:
            if path.startswith("/_bunker/devices"):
                os.makedirs(ask["dir"], mode=0o700, exist_ok=True)
                DEVICE_DIRS[ask["account"]] = ask["dir"]
            else:
                INSTANCES[ask["account"]] = {"instance_id": ask["instance_id"], "az": ask["az"]}
                LAST.clear()
                LAST.update(INSTANCES[ask["account"]])
        return answer(start_response, "200 OK", b"")
    account = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("account", [""])[0]
    with LOCK:
        body = json.dumps(HISTORY.get(account, {"attached": [], "detached": [], "deleted": []})).encode()
    return answer(start_response, "200 OK", body, "application/json")


def answer(start_response, status, body, kind="text/plain"):
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


def imds(environ, start_response, path):
    """IMDSv2 for ``path`` (``/latest/…`` or ``/_bunker/imds/<account>/latest/…``)."""
    instance = LAST
    if path.startswith("/_bunker/imds/"):
        account, _, rest = path[len("/_bunker/imds/"):].partition("/")
        instance, path = INSTANCES.get(account, {}), "/" + rest
    method = environ.get("REQUEST_METHOD")
    if path == "/latest/api/token" and method == "PUT":
        if not environ.get("HTTP_X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS"):
            return answer(start_response, "400 Bad Request", b"")
        ttl = environ["HTTP_X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS"]
        token = secrets.token_urlsafe(32)
        with LOCK:
            TOKENS.add(token)
        body = token.encode()
        # As IMDS answers (the SDKs read the token's lifetime from it).
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                                  ("X-aws-ec2-metadata-token-ttl-seconds", ttl)])
        return [body]
    with LOCK:
        valid = environ.get("HTTP_X_AWS_EC2_METADATA_TOKEN") in TOKENS
    if not valid:
        return answer(start_response, "401 Unauthorized", b"")
    values = {"/latest/meta-data/instance-id": instance.get("instance_id"),
              "/latest/meta-data/placement/availability-zone": instance.get("az")}
    value = values.get(path)
    if value is None:
        return answer(start_response, "404 Not Found", b"")
    return answer(start_response, "200 OK", value.encode())
