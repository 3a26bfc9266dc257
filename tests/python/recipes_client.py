"""A generated Python client runs a leader election (etcd's v3election API) and a double
barrier (corral.v1.Barrier) against corral, with no client-side library.

Usage: recipes_client.py ENDPOINT PROTO_DIR OUT_DIR
"""
import os
import sys
import threading

from grpc_tools import protoc


def generate(proto_dir, out_dir):
    files = [
        "etcd/mvccpb/kv.proto",
        "etcd/etcdserverpb/rpc.proto",
        "etcd/v3electionpb/v3election.proto",
        "corral/v1/znode.proto",
        "corral/v1/barrier.proto",
    ]
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + [os.path.join(proto_dir, f) for f in files]) != 0:
        raise SystemExit("grpc_tools.protoc failed")
    sys.path.insert(0, out_dir)


def main():
    endpoint, proto_dir, out_dir = sys.argv[1:4]
    generate(proto_dir, out_dir)
    import grpc
    from etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
    from etcd.v3electionpb import v3election_pb2 as el, v3election_pb2_grpc as el_rpc
    from corral.v1 import barrier_pb2 as bar, barrier_pb2_grpc as bar_rpc
    from corral.v1 import znode_pb2 as zn, znode_pb2_grpc as zn_rpc

    channel = grpc.insecure_channel(endpoint)
    leases = rpc_pb2_grpc.LeaseStub(channel)
    election = el_rpc.ElectionStub(channel)

    # Leader election: the first candidate leads; the second waits; resigning hands over.
    l1 = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30)).ID
    l2 = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30)).ID
    first = election.Campaign(el.CampaignRequest(name=b"py-election", lease=l1, value=b"one")).leader
    print("leader", first.key.decode())
    result = {}

    def second():
        result["leader"] = election.Campaign(
            el.CampaignRequest(name=b"py-election", lease=l2, value=b"two")
        ).leader

    t = threading.Thread(target=second)
    t.start()
    t.join(timeout=1.0)
    assert t.is_alive(), "the second candidate must wait while the first leads"
    current = election.Leader(el.LeaderRequest(name=b"py-election")).kv
    assert current.value == b"one", current
    election.Resign(el.ResignRequest(leader=first))
    t.join(timeout=20)
    assert not t.is_alive() and result["leader"].rev > first.rev, result
    print("next leader", result["leader"].key.decode())

    # Double barrier with three participants, each with its own session.
    sessions = zn_rpc.SessionsStub(channel)
    barrier = bar_rpc.BarrierStub(channel)
    entered, left, errors, started = [], [], [], []

    def participant(i):
        try:
            sid = sessions.OpenSession(zn.OpenSessionRequest(timeout_ms=10000)).session_id
            req = bar.DoubleBarrierRequest(name="py-barrier", count=3, session_id=sid)
            started.append(i)
            barrier.Enter(req)
            # Nobody passes the barrier before all three have entered it.
            entered.append(len(started))
            left.append(barrier.Leave(req).zxid)
            sessions.CloseSession(zn.CloseSessionRequest(session_id=sid))
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not errors, errors
    assert entered == [3, 3, 3], entered
    assert len(left) == 3, left
    print("double barrier", entered)

    try:
        barrier.Enter(bar.DoubleBarrierRequest(name="py-barrier", count=0, session_id=1))
        raise SystemExit("expected BadArguments")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    print("ok")


if __name__ == "__main__":
    main()
