"""Writes a batch to a V3 node, runs an aggregate query, prints the answer, then sends a bad write
and prints the field violations the server reports in google.rpc.BadRequest.

Usage: /usr/bin/python3 clients/python/example.py [--address HOST:PORT] [--token TOKEN]
           [--ca CA.pem] [--cert CLIENT.pem --key CLIENT.key]

--ca switches to TLS (with --cert and --key: mutual TLS); --token sends a bearer token.
Needs Debian's python3-grpcio (and the code in gen/, made by `npm run gen`).
"""

import argparse
import pathlib
import sys

# The generated modules live in gen/ beside this file, importable by their proto package names.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "gen"))

import grpc  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from v3storage.v1 import common_pb2, query_service_pb2, query_service_pb2_grpc  # noqa: E402
from v3storage.v1 import write_service_pb2, write_service_pb2_grpc  # noqa: E402

# 2024-01-01T00:00:00Z in ms: a multiple of the one-minute step, so buckets start at T0.
T0 = 1_704_067_200_000
MINUTE = 60_000


def channel(args: argparse.Namespace) -> grpc.Channel:
    if args.ca is None:
        return grpc.insecure_channel(args.address)
    read = lambda path: None if path is None else pathlib.Path(path).read_bytes()  # noqa: E731
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca), private_key=read(args.key), certificate_chain=read(args.cert))
    return grpc.secure_channel(args.address, creds)


def field_violations(err: grpc.RpcError) -> list:
    """The BadRequest field violations in the grpc-status-details-bin trailer, if any."""
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        violations = []
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                violations.extend(bad_request.field_violations)
        return violations
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--token")
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    metadata = [] if args.token is None else [("authorization", f"Bearer {args.token}")]

    with channel(args) as ch:
        writer = write_service_pb2_grpc.WriteServiceStub(ch)
        query = query_service_pb2_grpc.QueryServiceStub(ch)

        # Two hosts, six points each, 20 s apart: three in each of two minutes.
        timestamps = [T0 + i * 20_000 for i in range(6)]
        batch = write_service_pb2.WriteRequest(
            precision=common_pb2.PRECISION_MILLISECONDS,
            series=[
                common_pb2.SeriesPoints(metric="example_cpu", tags=[common_pb2.Tag(key="host", value=host)],
                                        timestamps=timestamps, values=values)
                for host, values in (("a", [1, 2, 3, 4, 5, 6]), ("b", [10, 20, 30, 40, 50, 60]))
            ])
        written = writer.Write(batch, metadata=metadata, timeout=10)
        print(f"wrote {written.points_written} points in {written.series_written} series")

        request = query_service_pb2.QueryRequest(
            selector=common_pb2.Selector(metric="example_cpu"),
            start_ms=T0,
            end_ms=T0 + 2 * MINUTE,
            aggregation=common_pb2.Aggregation(func=common_pb2.AGG_FUNC_AVG, step_ms=MINUTE, group_by=["host"]))
        answer = query.Query(request, metadata=metadata, timeout=10)
        print("avg of example_cpu per minute by host:")
        for series in sorted(answer.series, key=lambda s: [(t.key, t.value) for t in s.tags]):
            tags = ",".join(f"{t.key}={t.value}" for t in series.tags)
            for t, v in zip(series.timestamps, series.values):
                print(f"  {tags} {t} {v:g}")

        bad = write_service_pb2.WriteRequest(series=[
            common_pb2.SeriesPoints(metric="example cpu", tags=[common_pb2.Tag(key="1host", value="a")],
                                    timestamps=[T0], values=[1])])
        try:
            writer.Write(bad, metadata=metadata, timeout=10)
            print("bad write: accepted (unexpected)")
            return 1
        except grpc.RpcError as err:
            print(f"bad write: {err.code().name}")
            for violation in field_violations(err):
                print(f"  {violation.field}: {violation.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
