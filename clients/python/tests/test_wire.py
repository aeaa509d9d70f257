"""The encoding against docs/wire-format.md: the hex examples of section 9, the digest
vector of section 8 and the dtype table of section 4, all read from the document. No
servers needed."""
import sys
import unittest
from pathlib import Path

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import wiredoc  # noqa: E402

import jetinfer  # noqa: E402
from jetinfer import InvalidJob, JobExpired, JobFailed, Priority, Tensor, decode_result  # noqa: E402
from jetinfer.tensor import DTYPES, ITEM_SIZES, inputs_digest  # noqa: E402
from jetinfer.wire import (INPUTS_TTL_MARGIN_MS, INPUTS_TTL_MS, build_job, by_reference, encode_job,  # noqa: E402
                           inputs_ttl_ms, job_subject, now_ms)

ONE_TWO = [np.array([1.0, 2.0], dtype=np.float32)]  # the inputs of examples 9.1 and 9.4


class JobEncoding(unittest.TestCase):
    def test_job_9_1_is_byte_for_byte_the_documented_one(self):
        job, _ = build_job("j1", "mlp", ONE_TWO)
        self.assertEqual(encode_job(job).hex(), wiredoc.hex_example("### 9.1").hex())
        self.assertEqual(job_subject(Priority.parse("p1"), "mlp"), "jetinfer.jobs.p1.mlp")

    def test_inputs_by_reference_9_4_and_stored_value_9_5(self):
        job, tensors = build_job("j2", "mlp", ONE_TWO)
        ref_job, value = by_reference(job, tensors)
        self.assertEqual(value.hex(), wiredoc.hex_example("### 9.5").hex())
        self.assertEqual(encode_job(ref_job).hex(), wiredoc.hex_example("### 9.4").hex())

    def test_digest_vector_of_section_8(self):
        vec = wiredoc.digest_vector()
        t = Tensor.from_numpy(ONE_TWO[0])
        self.assertEqual(inputs_digest([t]), vec["digest"])
        from blake3 import blake3
        self.assertEqual(blake3(bytes.fromhex(vec["hashed"])).hexdigest(), vec["digest"])
        self.assertEqual(vec["key"], f"jetinfer:cache:mlp:1:{vec['digest']}")

    def test_optional_fields_in_the_rust_order_and_only_when_set(self):
        job, _ = build_job("j3", "mlp", ONE_TWO, version="1", deadline_ms=1_700_000_000_000, cache=False,
                           meta={"b": "2", "a": "1"})
        decoded = msgpack.unpackb(encode_job(job), raw=False)
        self.assertEqual(list(decoded), ["v", "id", "model", "version", "inputs", "deadline_ms", "cache", "meta"])
        self.assertEqual(list(decoded["meta"]), ["a", "b"])  # sorted, like the Rust BTreeMap
        ref_job, _ = by_reference(job, [Tensor.from_numpy(ONE_TWO[0])])
        self.assertEqual(list(ref_job), ["v", "id", "model", "version", "inputs", "inputs_ref", "deadline_ms",
                                         "cache", "meta"])
        self.assertEqual(ref_job["inputs"], [])

    def test_inputs_ttl_is_a_minute_past_the_deadline_or_an_hour(self):
        self.assertEqual(inputs_ttl_ms(None), INPUTS_TTL_MS)
        ttl = inputs_ttl_ms(now_ms() + 10_000)
        self.assertTrue(10_000 + INPUTS_TTL_MARGIN_MS - 1_000 < ttl <= 10_000 + INPUTS_TTL_MARGIN_MS, ttl)
        self.assertEqual(inputs_ttl_ms(now_ms() - 5_000), INPUTS_TTL_MARGIN_MS)


class ResultDecoding(unittest.TestCase):
    def test_minimal_error_result_9_2_takes_the_defaults(self):
        r = decode_result(wiredoc.hex_example("### 9.2"))
        self.assertEqual((r.id, r.status, r.model), ("j", "error", "m"))
        self.assertEqual((r.error.code, r.error.message), ("bad_payload", "x"))
        self.assertEqual((r.version, r.tensors, r.meta, r.worker, r.cached, r.attempts, r.completed_at_ms),
                         ("", [], {}, "", False, 0, 0))
        self.assertEqual(r.timings, jetinfer.Timings(0.0, 0, 0.0, 0.0))
        self.assertFalse(r.ok)
        with self.assertRaises(JobFailed) as caught:
            r.raise_for_status()
        self.assertEqual(caught.exception.code, "bad_payload")
        self.assertNotIsInstance(caught.exception, JobExpired)

    def test_ok_result_9_3_every_field(self):
        raw = wiredoc.hex_example("### 9.3")
        r = decode_result(raw)
        self.assertEqual((r.id, r.status, r.model, r.version, r.worker), ("j1", "ok", "mlp", "1", "w-1"))
        self.assertIsNone(r.error)
        self.assertEqual(r.tensors, [Tensor("f32", (4,), np.float32([0.5, -1.0, 2.0, 0.0]).tobytes())])
        np.testing.assert_array_equal(r.outputs[0], np.float32([0.5, -1.0, 2.0, 0.0]))
        self.assertEqual(r.outputs[0].dtype, np.float32)
        self.assertEqual((r.meta, r.cached, r.attempts, r.completed_at_ms), ({}, False, 1, 1_700_000_000_000))
        self.assertEqual(r.timings, jetinfer.Timings(queued_ms=1.5, batch_size=4, compute_ms=0.25, total_ms=2.0))
        self.assertIs(r.raise_for_status(), r)
        # Byte for byte: the decoded fields, written back in the documented order, are the example.
        back = {"v": 1, "id": r.id, "status": r.status, "model": r.model, "version": r.version,
                "outputs": [t.to_wire() for t in r.tensors], "meta": r.meta, "worker": r.worker,
                "cached": r.cached, "attempts": r.attempts, "timings": vars(r.timings),
                "completed_at_ms": r.completed_at_ms}
        self.assertEqual(msgpack.packb(back, use_bin_type=True), raw)

    def test_expired_status_raises_job_expired_with_its_code(self):
        raw = msgpack.packb({"v": 1, "id": "e", "status": "expired", "model": "m",
                             "error": {"code": "expired", "message": "deadline passed"}, "later_key": 7})
        r = decode_result(raw)
        self.assertEqual(r.extra, {"later_key": 7})  # unknown keys are kept, not refused
        with self.assertRaises(JobExpired) as caught:
            r.raise_for_status()
        self.assertEqual(caught.exception.code, "expired")

    def test_garbage_is_a_value_error(self):
        for raw in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"id": "x"})):
            with self.assertRaises(ValueError):
                decode_result(raw)


class Tensors(unittest.TestCase):
    def test_the_dtype_table_of_section_4(self):
        rows = wiredoc.dtype_table()
        self.assertEqual({r["dtype"] for r in rows}, set(ITEM_SIZES))
        for row in rows:
            self.assertEqual(ITEM_SIZES[row["dtype"]], row["size"], row)
            if row["numpy"] is not None:
                self.assertEqual(np.dtype(DTYPES[row["dtype"]]), np.dtype(row["numpy"]), row)
            else:
                self.assertNotIn(row["dtype"], DTYPES)  # bf16: no numpy type

    def test_every_numpy_dtype_round_trips_through_msgpack(self):
        for name, np_dtype in DTYPES.items():
            a = (np.arange(6) % 2).astype(np_dtype).reshape(2, 3)
            t = Tensor.from_numpy(a)
            back = Tensor.from_wire(msgpack.unpackb(msgpack.packb(t.to_wire(), use_bin_type=True)))
            self.assertEqual(back.dtype, name)
            self.assertEqual(back.numpy().dtype, a.dtype)
            np.testing.assert_array_equal(back.numpy(), a)

    def test_big_endian_and_strided_arrays_are_sent_little_endian_c_order(self):
        a = np.arange(12, dtype=">i4").reshape(3, 4).T
        t = Tensor.from_numpy(a)
        self.assertEqual((t.dtype, t.shape), ("i32", (4, 3)))
        self.assertEqual(t.data, np.ascontiguousarray(a, dtype="<i4").tobytes())

    def test_bf16_reads_as_the_upper_half_of_a_float32(self):
        values = np.float32([1.0, -2.5, 0.15625])
        bf16 = (values.view("<u4") >> 16).astype("<u2").tobytes()
        np.testing.assert_array_equal(Tensor("bf16", (3,), bf16).numpy(), values)

    def test_bytes_are_a_u8_vector_and_scalars_have_shape_empty(self):
        job, _ = build_job("b", "m", [b"\x01\x02\x03", np.int64(7)])
        self.assertEqual(job["inputs"][0], {"dtype": "u8", "shape": [3], "data": b"\x01\x02\x03"})
        self.assertEqual(job["inputs"][1]["shape"], [])


class InvalidJobs(unittest.TestCase):
    def assertInvalid(self, **kwargs):
        args = {"job_id": "ok-1", "model": "mlp", "inputs": ONE_TWO, **kwargs}
        with self.assertRaises(InvalidJob):
            build_job(args.pop("job_id"), args.pop("model"), args.pop("inputs"), **args)

    def test_identifiers(self):
        self.assertInvalid(job_id="")
        self.assertInvalid(job_id="a b")
        self.assertInvalid(job_id="x" * 129)
        self.assertInvalid(model="a.b")
        self.assertInvalid(model="")
        self.assertInvalid(version="1 0")
        build_job("a.b:c-d_" + "x" * 120, "m_1-x", ONE_TWO, version="1.0-rc_1")  # the edges that pass

    def test_inputs(self):
        self.assertInvalid(inputs=[])
        self.assertInvalid(inputs=ONE_TWO * 17)
        self.assertInvalid(inputs=ONE_TWO[0])  # one array is not a list of samples
        self.assertInvalid(inputs=[np.zeros(2, np.complex64)])
        self.assertInvalid(inputs=[np.zeros([1] * 9, np.float32)])
        self.assertInvalid(inputs=[np.array(["text"])])
        with self.assertRaises(InvalidJob):
            Tensor("f32", (3,), b"\x00" * 8)  # 3 elements need 12 bytes
        with self.assertRaises(InvalidJob):
            Tensor("f128", (1,), b"\x00" * 16)

    def test_options(self):
        self.assertInvalid(meta={"k": 1})
        self.assertInvalid(cache="yes")
        self.assertInvalid(deadline_ms=-1)
        self.assertInvalid(deadline_ms=1.5)
        for bad in ("p3", 3, "high", None):
            with self.assertRaises(InvalidJob):
                Priority.parse(bad)
        self.assertEqual([Priority.parse(p) for p in ("P0", 1, Priority.P2)], [Priority.P0, Priority.P1, Priority.P2])
        self.assertTrue(issubclass(InvalidJob, ValueError))

    def test_a_message_over_8_mib_is_refused_even_by_reference(self):
        huge = [np.zeros(3 << 20, np.float32)]  # 12 MiB of data, under the element limit
        job, tensors = build_job("h", "m", huge)
        with self.assertRaises(InvalidJob):
            encode_job(job)
        with self.assertRaises(InvalidJob):
            by_reference(job, tensors)


class Connecting(unittest.TestCase):
    def test_an_unreachable_nats_is_a_connect_error_without_credentials_in_it(self):
        with self.assertRaises(jetinfer.ConnectError) as caught:
            jetinfer.Client("nats://user:s3cret@127.0.0.1:1", "redis://127.0.0.1:1", connect_wait=0.5)
        self.assertIn("no connection within 0.5 s", str(caught.exception))
        self.assertNotIn("s3cret", str(caught.exception))


class TraceContext(unittest.TestCase):
    def test_no_current_span_no_header(self):
        from jetinfer._otel import trace_headers
        self.assertEqual(trace_headers(), {})

    def test_traceparent_of_the_current_span(self):
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError:
            self.skipTest("opentelemetry-sdk is not installed")
        from jetinfer._otel import trace_headers
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("producer") as span:
            ctx = span.get_span_context()
            headers = trace_headers()
        self.assertEqual(headers["traceparent"], f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}")
        del trace


if __name__ == "__main__":
    unittest.main()
