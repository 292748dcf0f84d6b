"""Pulls tags of one repository with the oras Python client (an implementation independent of
svidgate-oci) and prints, as JSON per tag, the digest of the manifest bytes served, the digest of
every blob downloaded, and the sha256 of every file `oras pull` wrote.

usage: oras_pull.py HOST:PORT/REPOSITORY TAG...   (plain HTTP: a loopback test registry)
"""
import hashlib
import json
import os
import sys
import tempfile

import oras.client


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(repo, tags):
    client = oras.client.OrasClient(hostname=repo.split("/")[0], insecure=True)
    report = {}
    for tag in tags:
        target = f"{repo}:{tag}"
        container = client.get_container(target)
        url = f"{client.prefix}://{container.manifest_url()}"
        response = client.do_request(url, "GET", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        response.raise_for_status()
        manifest = json.loads(response.content)
        with tempfile.TemporaryDirectory() as tmp:
            blobs = {}
            for descriptor in [manifest["config"]] + manifest["layers"]:
                path = os.path.join(tmp, descriptor["digest"].replace(":", "_"))
                client.download_blob(container, descriptor["digest"], path)
                blobs[descriptor["digest"]] = "sha256:" + sha256(path)
            pulled = os.path.join(tmp, "pulled")
            client.pull(target=target, outdir=pulled)
            files = {}
            for root, _, names in os.walk(pulled):
                for name in names:
                    path = os.path.join(root, name)
                    files[os.path.relpath(path, pulled)] = sha256(path)
        report[tag] = {
            "manifest_digest": "sha256:" + hashlib.sha256(response.content).hexdigest(),
            "blobs": blobs,
            "files": files,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
