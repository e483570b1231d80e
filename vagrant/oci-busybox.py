#!/usr/bin/env python3
"""Builds the lab's pod image offline: a minimal OCI image archive (oci-layout, index.json,
blobs) of one uncompressed layer holding a static busybox and a symlink per applet.

  oci-busybox.py BUSYBOX OUT.tar [NAME]

BUSYBOX is a static busybox binary (Debian's busybox-static: /bin/busybox); NAME defaults to
localhost/cbrnet-lab/busybox:1.35. The archive is reproducible (fixed times and owners, sorted
entries), and `ctr images import` takes it as is (the name is in the index's
io.containerd.image.name annotation).
"""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

EPOCH = 0


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in entries:
            info.mtime = EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def dir_entry(path, mode=0o755):
    i = tarfile.TarInfo(path)
    i.type = tarfile.DIRTYPE
    i.mode = mode
    return i, None


def file_entry(path, data, mode=0o644):
    i = tarfile.TarInfo(path)
    i.size = len(data)
    i.mode = mode
    return i, data


def link_entry(path, target):
    i = tarfile.TarInfo(path)
    i.type = tarfile.SYMTYPE
    i.linkname = target
    i.mode = 0o777
    return i, None


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    busybox, out = argv[0], argv[1]
    name = argv[2] if len(argv) == 3 else "localhost/cbrnet-lab/busybox:1.35"
    with open(busybox, "rb") as f:
        bb = f.read()
    applets = sorted(set(subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()))
    entries = [dir_entry(d) for d in ("bin", "dev", "etc", "proc", "root", "run", "sys", "var")]
    entries.append(dir_entry("tmp", 0o1777))
    entries.append(file_entry("bin/busybox", bb, 0o755))
    entries += [link_entry(f"bin/{a}", "busybox") for a in applets if a != "busybox"]
    entries.append(file_entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"))
    entries.append(file_entry("etc/group", b"root:x:0:\n"))
    layer = tar_bytes(entries)
    layer_digest = hashlib.sha256(layer).hexdigest()

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
            "history": [{"created_by": f"cbrnet lab: {os.path.basename(busybox)} + {len(applets)} applet links"}],
        },
        sort_keys=True,
    ).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{config_digest}", "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{layer_digest}", "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    manifest_digest = hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{manifest_digest}",
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
                }
            ],
        },
        sort_keys=True,
    ).encode()

    archive = [dir_entry("blobs"), dir_entry("blobs/sha256")]
    for digest, data in sorted([(layer_digest, layer), (config_digest, config), (manifest_digest, manifest)]):
        archive.append(file_entry(f"blobs/sha256/{digest}", data))
    archive.append(file_entry("index.json", index))
    archive.append(file_entry("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'))
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(tar_bytes(archive))
    os.replace(tmp, out)
    print(f"{out}: {name}, manifest sha256:{manifest_digest[:12]}, layer {len(layer)} bytes, {len(applets)} applets")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
