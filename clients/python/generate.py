"""Regenerates the Python client code from the contract in proto/ (and the two google.rpc messages
the example reads error details with) using Debian's python3-grpc-tools.

Usage: /usr/bin/python3 clients/python/generate.py [out_dir]   (default clients/python/gen)

`npm run gen` runs this; test/unit/gen-fresh.test.ts runs it into a temporary folder and fails
when clients/python/gen differs.
"""

import pathlib
import shutil
import sys

try:
    import grpc_tools
    from grpc_tools import protoc
except ImportError:
    sys.exit("grpc_tools is missing: apt-get install python3-grpcio python3-grpc-tools, "
             "then run this with Debian's /usr/bin/python3")

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main() -> None:
    out = pathlib.Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE / "gen"
    # Cleared first, so that a deleted .proto leaves no stale module behind (as buf's clean: true).
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    contract = sorted((ROOT / "proto").glob("v3storage/v1/*.proto"))
    rpc = sorted((HERE / "protos").glob("google/rpc/*.proto"))
    # The well-known types (google/protobuf/any.proto) ship inside grpc_tools.
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{HERE / 'protos'}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *[str(p) for p in contract],
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed on proto/v3storage/v1")
    # Messages only: google.rpc has no services, so no _grpc modules.
    args = ["grpc_tools.protoc", f"-I{HERE / 'protos'}", f"-I{well_known}", f"--python_out={out}",
            *[str(p) for p in rpc]]
    if protoc.main(args) != 0:
        sys.exit("protoc failed on clients/python/protos")


if __name__ == "__main__":
    main()
