"""An S3 server on 127.0.0.1 standing in for RunPod's S3-compatible API of network volumes (moto's server:
the real S3 wire protocol over HTTP, buckets in memory). Nothing here reaches RunPod or AWS.

    with s3_server() as s3:
        s3.env            # RUNPOD_S3_ENDPOINT, RUNPOD_S3_ACCESS_KEY, RUNPOD_S3_SECRET_KEY for the launcher
        s3.volume("vol")  # a bucket named like a network volume id; returns a boto3 client
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

ACCESS_KEY = "user_2fakeS3AccessKey000000000"  # RunPod's S3 keys look like user_... / rps_...
SECRET_KEY = "rps_FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE0000"
DATACENTER = "EU-RO-1"


@dataclass
class S3:
    url: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "RUNPOD_S3_ENDPOINT": self.url,
            "RUNPOD_S3_ACCESS_KEY": ACCESS_KEY,
            "RUNPOD_S3_SECRET_KEY": SECRET_KEY,
        }

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=DATACENTER.lower(),
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def bucket(self, name: str):
        """A bucket of that name, made unless it is there: moto keeps its buckets per process, across its
        servers, so a test that ran before on this worker may have made it."""
        client = self.client()
        try:
            client.create_bucket(
                Bucket=name, CreateBucketConfiguration={"LocationConstraint": DATACENTER.lower()}
            )
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return client

    def volume(self, volume_id: str):
        client = self.client()
        client.create_bucket(
            Bucket=volume_id, CreateBucketConfiguration={"LocationConstraint": DATACENTER.lower()}
        )
        return client


@contextlib.contextmanager
def s3_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3(f"http://{host}:{port}")
    finally:
        server.stop()
