"""A Python client generated from proto/ with grpcio-tools drives corral's znode API.

Usage: znode_client.py ENDPOINT PROTO_DIR OUT_DIR
Generates the client into OUT_DIR, then runs create / get / set / children / watch against the
server at ENDPOINT and exits 0 only if every check held. Prints one line per step.
"""
import os
import queue
import sys
import threading

from grpc_tools import protoc


def generate(proto_dir, out_dir):
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(proto_dir, "corral", "v1", "znode.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed")
    sys.path.insert(0, out_dir)


def main():
    endpoint, proto_dir, out_dir = sys.argv[1:4]
    generate(proto_dir, out_dir)
    import grpc
    from corral.v1 import znode_pb2 as pb
    from corral.v1 import znode_pb2_grpc as rpc

    channel = grpc.insecure_channel(endpoint)
    znodes = rpc.ZnodesStub(channel)
    sessions = rpc.SessionsStub(channel)

    created = znodes.Create(pb.CreateRequest(path="/py", data=b"hello", mode=pb.PERSISTENT))
    assert created.path == "/py", created
    print("create", created.path, created.zxid)

    got = znodes.GetData(pb.GetDataRequest(path="/py"))
    assert got.data == b"hello" and got.stat.version == 0, got
    print("get", got.data.decode(), got.stat.version)

    # A watch registered atomically with a read, on a stream.
    requests = queue.Queue()

    def request_iter():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    responses = znodes.Watch(request_iter())
    events = queue.Queue()

    def pump():
        try:
            for r in responses:
                events.put(r)
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    requests.put(pb.WatchRequest(add=pb.AddWatch(watch_id=1, path="/py", kind=pb.WATCH_DATA, read=True)))
    requests.put(pb.WatchRequest(add=pb.AddWatch(watch_id=2, path="/py", kind=pb.WATCH_CHILDREN, read=True)))
    acks = [events.get(timeout=10), events.get(timeout=10)]
    assert all(a.added for a in acks), acks
    assert acks[0].data == b"hello", acks[0]

    updated = znodes.SetData(pb.SetDataRequest(path="/py", data=b"world", version=0))
    assert updated.stat.version == 1, updated
    print("set", updated.stat.version)

    session = sessions.OpenSession(pb.OpenSessionRequest(timeout_ms=10000))
    eph = znodes.Create(
        pb.CreateRequest(path="/py/e-", mode=pb.EPHEMERAL_SEQUENTIAL, session_id=session.session_id)
    )
    assert eph.path == "/py/e-0000000000", eph
    children = znodes.GetChildren(pb.GetChildrenRequest(path="/py", with_stats=True))
    assert list(children.children) == ["e-0000000000"], children
    assert children.child_stats[0].ephemeral_owner == session.session_id
    print("children", list(children.children))

    fired = sorted(
        (e.watch_id, pb.EventType.Name(e.event.type)) for e in (events.get(timeout=10), events.get(timeout=10))
    )
    assert fired == [(1, "NODE_DATA_CHANGED"), (2, "NODE_CHILDREN_CHANGED")], fired
    print("watch", fired)

    try:
        znodes.GetData(pb.GetDataRequest(path="/nope"))
        raise SystemExit("expected NoNode")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND and e.details().startswith("NoNode"), e
        print("error", e.code().name, e.details())

    sessions.CloseSession(pb.CloseSessionRequest(session_id=session.session_id))
    assert not znodes.Exists(pb.ExistsRequest(path=eph.path)).exists
    requests.put(None)
    print("ok")


if __name__ == "__main__":
    main()
