"""The bench's text table, on the CPU: the same-run ratio ours/peer is printed beside the H200 baseline's."""
from flashmla_rt import bench


def record(ours_graph, peer_graph):
    return {"row": 3, "label": "b4 s_q1 h_q16 s_k32768",
            "baseline": {"best_peer_graph_us": 57},
            "ours": {"graph": {"us": ours_graph, "gbps": 2500.0, "pct_read_ceiling": 80.0, "tflops": 77.0},
                     "eager": {"us": ours_graph + 20.0}},
            "peer": {"graph": {"us": peer_graph}, "eager": {"us": peer_graph + 20.0}, "max_abs_diff_out": 0.0005},
            "ours_graph_over_best_peer": round(ours_graph / 57, 3),
            "ours_graph_over_peer": round(ours_graph / peer_graph, 3)}


def test_table_has_the_same_run_ratio_beside_the_baseline_ratio():
    head, _, line = bench.format_table([record(59.6, 66.35)]).splitlines()
    columns = head.split()
    assert columns.index("ours/peer") < columns.index("base") < columns.index("ours/best")
    values = line.split()
    # 3 b4 s_q1 h_q16 s_k32768 | ours eag, ours gr, GB/s, %rd, TFLOPS, peer eag, peer gr, ours/peer, base, ours/best
    assert values[:5] == ["3", "b4", "s_q1", "h_q16", "s_k32768"]
    assert values[12] == "0.898" and values[13] == "57" and values[14] == "1.046"


def test_table_without_a_peer_prints_a_dash():
    rec = record(59.6, 66.35)
    del rec["peer"], rec["ours_graph_over_peer"]
    line = bench.format_table([rec]).splitlines()[2].split()
    assert line[10:13] == ["-", "-", "-"]        # peer eag, peer gr, ours/peer
