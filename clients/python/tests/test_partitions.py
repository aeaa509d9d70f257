"""Partition streams and input stores without servers: the choice of partition and store
against the vectors of docs/wire-format.md (sections 2.1 and 10, read from the document),
the names, the count read from stream metadata, and example 9.6 byte for byte."""
import re
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import wiredoc  # noqa: E402

import numpy as np  # noqa: E402

import jetinfer  # noqa: E402
from jetinfer import Priority  # noqa: E402
from jetinfer.wire import (build_job, by_reference, encode_job, fnv1a_32, input_store_for, partition_for,  # noqa: E402
                           partition_stream, partition_subject, partitions_from_metadata)


def documented_partitions():
    """Section 2.1's example: (N, ids, partitions)."""
    body = wiredoc.section("### 2.1")
    m = re.search(r"with N = (\d+),\s+ids `(\S+?)(\d+)` …\s+`\S+?(\d+)`\s+go\s+to\s+partitions\s+([\d,\s]+\d)", body)
    if m is None:
        raise AssertionError("section 2.1's partition example not found")
    n, prefix, first, last = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    ids = [f"{prefix}{i}" for i in range(first, last + 1)]
    return n, ids, [int(p) for p in m.group(5).replace(",", " ").split()]


class PartitionChoice(unittest.TestCase):
    def test_fnv1a_32_of_a_as_documented(self):
        for heading in ("### 2.1", "## 10."):
            m = re.search(r'FNV-1a-32 of `"a"` is `(0x[0-9a-f]+)`|id `a` hashes to `(0x[0-9a-f]+)`',
                          wiredoc.section(heading))
            self.assertIsNotNone(m, heading)
            self.assertEqual(fnv1a_32(b"a"), int(m.group(1) or m.group(2), 16))
        self.assertEqual(fnv1a_32(b"a"), 0xE40C292C)
        self.assertEqual(fnv1a_32(b""), 0x811C9DC5)  # the offset basis

    def test_the_documented_ids_go_to_the_documented_partitions(self):
        n, ids, partitions = documented_partitions()
        self.assertEqual(len(ids), len(partitions))
        self.assertEqual([partition_for(i, n) for i in ids], partitions)
        self.assertEqual((n, partitions), (3, [2, 0, 1, 0, 1, 2, 0, 2]))  # the vectors of the Rust schemas tests

    def test_one_partition_is_always_partition_0_and_the_same_hash_chooses_input_stores(self):
        self.assertEqual(partition_for("a", 4), 0xE40C292C % 4)
        self.assertEqual({partition_for(f"job-{i}", 1) for i in range(100)}, {0})
        self.assertEqual({partition_for(f"job-{i}", 0) for i in range(100)}, {0})
        for i in range(200):
            self.assertEqual(input_store_for(f"job-{i}", 3), partition_for(f"job-{i}", 3))
        self.assertEqual(input_store_for("a", 1), 0)
        # Non-ASCII ids hash their UTF-8 bytes (ids are ASCII on the wire, but the function is general).
        self.assertEqual(partition_for("é", 7), fnv1a_32("é".encode("utf-8")) % 7)

    def test_ids_spread_evenly(self):
        counts = [0] * 4
        for i in range(4000):
            counts[partition_for(f"job-{i}", 4)] += 1
        self.assertTrue(all(800 < c < 1200 for c in counts), counts)

    def test_stream_and_subject_names(self):
        self.assertEqual(partition_stream(Priority.P1, 0), "JETINFER_P1")
        self.assertEqual(partition_stream(Priority.P2, 3), "JETINFER_P2_3")
        self.assertEqual(partition_subject(Priority.P1, "mlp", 0), "jetinfer.jobs.p1.mlp")
        self.assertEqual(partition_subject(Priority.P2, "mlp", 3), "jetinfer.jobs.p2.mlp.3")

    def test_the_count_from_stream_metadata(self):
        self.assertEqual([partitions_from_metadata(v) for v in (None, "4", " 2 ", "0", "9", "99", "x", "")],
                         [1, 4, 2, 1, 1, 1, 1, 1])

    def test_a_fixed_count_out_of_range_is_refused(self):
        for bad in (0, 9, "3", True):
            with self.assertRaises(jetinfer.InvalidJob):
                jetinfer.Client("nats://127.0.0.1:1", "redis://127.0.0.1:1", partitions=bad, connect_wait=0.2)


class InputStoreReference(unittest.TestCase):
    def test_job_9_6_names_its_store_and_store_0_is_left_out(self):
        job, tensors = build_job("j2", "mlp", [np.array([1.0, 2.0], dtype=np.float32)])
        ref_job, value = by_reference(job, tensors, store=1)
        self.assertEqual(encode_job(ref_job).hex(), wiredoc.hex_example("### 9.6").hex())
        self.assertEqual(value.hex(), wiredoc.hex_example("### 9.5").hex())
        ref0, _ = by_reference(job, tensors, store=0)
        self.assertNotIn("store", ref0["inputs_ref"])
        self.assertEqual(encode_job(ref0).hex(), wiredoc.hex_example("### 9.4").hex())


if __name__ == "__main__":
    unittest.main()
