"""A session of a Python client generated from tributary.v1's .proto (scripts/check-python-client).

Written from the .proto and docs/api.md alone; every step asserts what the docs promise.
"""

import queue
import sys
import uuid

import grpc
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2, status_pb2
from tributary.v1 import event_stream_pb2 as pb
from tributary.v1 import event_stream_pb2_grpc as rpc


def check(cond, what):
    if not cond:
        print(f"check-python-client: FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"check-python-client: ok: {what}")


def main(target):
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = rpc.EventStreamStub(channel)
    name = "py-" + uuid.uuid4().hex[:8]

    info = stub.GetServerInfo(empty_pb2.Empty(), timeout=10)
    check(info.max_batch_events > 0 and info.defaults.max_in_flight > 0, "GetServerInfo tells limits and defaults")

    created = stub.CreateStream(pb.CreateStreamRequest(name=name, partitions=2), timeout=10)
    check(created.config.HasField("partitions") and created.config.partitions == 2, "an explicit partitions field is kept")

    events = [pb.NewEvent(event_id=str(uuid.uuid4()), event_type="order.created", key=str(i).encode(), payload=b'{"n":%d}' % i) for i in range(6)]
    published = stub.Publish(pb.PublishRequest(stream=name, events=events), timeout=10)
    check(len(published.outcomes) == 6 and not any(o.duplicate for o in published.outcomes), "six events published")

    # ReadStream pages through both partitions without knowing them.
    seen, start = [], []
    for _ in range(10):
        page = stub.ReadStream(pb.ReadStreamRequest(stream=name, max=4, **{"from": start}), timeout=10)
        seen += [(e.partition, e.offset) for e in page.events]
        start = list(page.next)
        if page.end:
            break
    check(len(seen) == 6 and len(set(seen)) == 6, "ReadStream read every event once")

    # A bidirectional session: open, receive, ack (one position never delivered), a bad ack.
    requests = queue.Queue()

    def outgoing():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    open_msg = pb.OpenSubscription(
        stream=name, subscription="py", consumer="py-1",
        create=pb.SubscriptionConfig(mode=pb.SUBSCRIPTION_MODE_EXCLUSIVE),
    )
    requests.put(pb.SubscribeRequest(request_id=1, open=open_msg))
    responses = stub.Subscribe(outgoing(), timeout=60)
    first = next(responses)
    check(first.request_id == 1 and first.WhichOneof("kind") == "subscribed", "open answered by subscribed with its id")

    delivered = []
    while len(delivered) < 6:
        m = next(responses)
        if m.WhichOneof("kind") == "events":
            check(m.request_id == 0, "events carry request id 0")
            delivered += [pb.Position(partition=d.event.partition, offset=d.event.offset) for d in m.events.events]
    never = pb.Position(partition=0, offset=1000)
    requests.put(pb.SubscribeRequest(request_id=2, ack=pb.Ack(positions=delivered + [never])))
    requests.put(pb.SubscribeRequest(request_id=3, ack=pb.Ack()))
    answers = {}
    while len(answers) < 2:
        m = next(responses)
        if m.request_id in (2, 3):
            answers[m.request_id] = m
    settled = answers[2].settled
    check(len(settled.applied) == 6, "the ack applied to the six delivered positions")
    check(
        len(settled.skipped) == 1 and settled.skipped[0].reason == pb.SKIP_REASON_NOT_DELIVERED
        and settled.skipped[0].position.offset == 1000,
        "the undelivered position is skipped as NOT_DELIVERED",
    )
    err = answers[3].error
    # ErrorStatus is wire-identical to google.rpc.Status.
    status = status_pb2.Status.FromString(err.SerializeToString())
    check(status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], "an empty ack is INVALID_ARGUMENT")
    reasons, fields = [], []
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            i = error_details_pb2.ErrorInfo()
            d.Unpack(i)
            reasons.append((i.domain, i.reason))
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            b = error_details_pb2.BadRequest()
            d.Unpack(b)
            fields += [v.field for v in b.field_violations]
    check(("tributary", "INVALID_INPUT") in reasons, "the in-band error has its ErrorInfo")
    check("positions" in fields, "the in-band error has its BadRequest naming the field")
    requests.put(None)
    responses.cancel()

    # A call status carries the same details.
    try:
        stub.GetStream(pb.GetStreamRequest(name="missing-" + name), timeout=10)
        check(False, "GetStream of a missing stream fails")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, "a missing stream is NOT_FOUND")
        md = dict(e.trailing_metadata() or ())
        raw = md.get("grpc-status-details-bin")
        check(raw is not None, "the status has details")
        s = status_pb2.Status.FromString(raw)
        info = error_details_pb2.ErrorInfo()
        check(any(d.Unpack(info) for d in s.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)) and info.reason == "STREAM_NOT_FOUND", "its ErrorInfo says STREAM_NOT_FOUND")

    stub.DeleteStream(pb.DeleteStreamRequest(name=name), timeout=10)
    print("check-python-client: every step held")


if __name__ == "__main__":
    main(sys.argv[1])
