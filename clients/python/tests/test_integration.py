"""The client against a real jetinfer stack (nats-server, redis-server, dispatcher and a
worker serving models/out): golden jobs inline and by reference, waits, typed errors.
Runs only when JETINFER_TEST_NATS_URL and JETINFER_TEST_REDIS_URL are set
(tests/tests/python_client.rs sets them); the publish-refusal cases start their own bare
nats-server, because the stack's dispatcher has made every stream."""
import asyncio
import sys
import threading
import unittest
import uuid
from pathlib import Path

import msgpack
import numpy as np
import redis.asyncio as aioredis
from nats.js.api import DiscardPolicy

sys.path.insert(0, str(Path(__file__).parent))
import stackenv  # noqa: E402
from stackenv import NATS_URL, REDIS_URL, BareNats, golden_samples, mismatch  # noqa: E402

import jetinfer  # noqa: E402
from jetinfer import (AsyncClient, Client, InvalidJob, JobExpired, JobFailed, Rejected, StoreError,  # noqa: E402
                      StreamFull, StreamMissing, Timeout, WaitManyTimeout)
from jetinfer.aio import normalize_redis_url  # noqa: E402
from jetinfer.wire import INPUTS_TTL_MARGIN_MS, INPUTS_TTL_MS, input_key  # noqa: E402

needs_stack = unittest.skipUnless(NATS_URL and REDIS_URL, stackenv.SKIP_REASON)


def new_id(tag: str) -> str:
    return f"pytest-{tag}-{uuid.uuid4().hex[:12]}"


@needs_stack
class SyncClientOnTheStack(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = Client(NATS_URL, REDIS_URL, name="jetinfer-python-tests")

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def test_golden_pair_jobs_inline_with_wait_many(self):
        samples = golden_samples("pair", 20)
        subs = [self.client.submit("pair", ins, id=new_id("pair")) for ins, _ in samples]
        self.assertFalse(any(s.by_reference or s.duplicate for s in subs))
        results = self.client.wait_many([s.id for s in subs], timeout=60)
        self.assertEqual([r.id for r in results], [s.id for s in subs])
        bad = [f"{r.id}: {mismatch(r, outs)}" for r, (_, outs) in zip(results, samples) if mismatch(r, outs)]
        self.assertEqual(bad, [])
        self.assertTrue(all(r.model == "pair" and r.version == "1" and r.attempts >= 1 for r in results))

    def test_get_is_none_until_a_result_exists_and_wait_times_out(self):
        job_id = new_id("never-sent")
        self.assertIsNone(self.client.get(job_id))
        with self.assertRaises(Timeout) as caught:
            self.client.wait(job_id, timeout=0.3)
        self.assertIsInstance(caught.exception, TimeoutError)
        self.assertEqual(caught.exception.job_id, job_id)

    def test_wait_many_keeps_order_repeats_and_what_arrived_at_a_timeout(self):
        a = self.client.submit("mlp", [np.ones(16, np.float32)]).id
        b = self.client.submit("mlp", [np.zeros(16, np.float32)]).id
        got = self.client.wait_many([b, a, b], timeout=30)
        self.assertEqual([r.id for r in got], [b, a, b])
        ghost = new_id("ghost")
        with self.assertRaises(WaitManyTimeout) as caught:
            self.client.wait_many([a, ghost], timeout=0.5)
        self.assertEqual(caught.exception.missing, [ghost])
        self.assertEqual(caught.exception.results[0].id, a)
        self.assertIsNone(caught.exception.results[1])

    def test_unknown_model_gets_its_error_status_and_code(self):
        result = self.client.infer("no_such_model", [np.ones(4, np.float32)], check=False, timeout=30)
        self.assertEqual((result.status, result.error.code), ("error", "unknown_model"))
        with self.assertRaises(JobFailed) as caught:
            self.client.infer("no_such_model", [np.ones(4, np.float32)], timeout=30)
        self.assertEqual(caught.exception.code, "unknown_model")
        self.assertEqual(caught.exception.result.status, "error")

    def test_a_job_past_its_deadline_expires(self):
        with self.assertRaises(JobExpired) as caught:
            self.client.infer("mlp", [np.ones(16, np.float32)], deadline_ms=jetinfer.wire.now_ms() - 1000,
                              timeout=30)
        self.assertEqual((caught.exception.result.status, caught.exception.code), ("expired", "expired"))

    def test_invalid_input_is_refused_before_sending(self):
        with self.assertRaises(InvalidJob):
            self.client.submit("mlp", [np.ones(16, np.float32)], id="has space")
        with self.assertRaises(InvalidJob):
            self.client.submit("mlp.v2", [np.ones(16, np.float32)])

    def test_the_client_can_be_shared_by_threads(self):
        samples = golden_samples("mlp", 8)
        results = [None] * len(samples)

        def run(i):
            results[i] = self.client.infer("mlp", samples[i][0], timeout=30)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(samples))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([mismatch(r, outs) for r, (_, outs) in zip(results, samples)], [""] * len(samples))

    def test_a_reused_id_with_other_inputs_raises_id_conflict(self):
        job_id = new_id("reuse")
        first = self.client.infer("mlp", [np.ones(16, np.float32)], id=job_id, timeout=30)
        self.assertTrue(first.inputs_digest, "results record their inputs' digest")
        # Inside JetStream's duplicate window the second publish is dropped: the stored
        # result is the first job's, and the client must not return it as its own.
        with self.assertRaises(jetinfer.IdConflict) as caught:
            self.client.infer("mlp", [np.zeros(16, np.float32)], id=job_id, timeout=30)
        self.assertEqual(caught.exception.result.inputs_digest, first.inputs_digest)
        # The same job again is its own result.
        again = self.client.infer("mlp", [np.ones(16, np.float32)], id=job_id, timeout=30)
        self.assertEqual(again.inputs_digest, first.inputs_digest)


@needs_stack
class AsyncClientOnTheStack(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.client = await AsyncClient.connect(NATS_URL, REDIS_URL)

    async def asyncTearDown(self):
        await self.client.close()

    async def check_golden(self, model: str, count: int, by_reference: bool, **options):
        """Golden jobs over the three priorities, each run by a model (no result cache)."""
        samples = golden_samples(model, count)
        subs = [await self.client.submit(model, ins, priority=p % 3, cache=False, **options) for p, (ins, _) in enumerate(samples)]
        self.assertEqual({s.by_reference for s in subs}, {by_reference})
        self.assertEqual({s.stream for s in subs}, {"JETINFER_P0", "JETINFER_P1", "JETINFER_P2"})
        results = await self.client.wait_many([s.id for s in subs], timeout=60)
        bad = [f"{r.id}: {mismatch(r, outs)}" for r, (_, outs) in zip(results, samples) if mismatch(r, outs)]
        self.assertEqual(bad, [])
        self.assertFalse(any(r.cached for r in results))  # a model ran each job (cache=False)

    async def test_golden_imgmean_jobs_inline(self):
        await self.check_golden("imgmean", 20, by_reference=False)

    async def test_golden_imgmean_jobs_by_reference(self):
        self.client.inline_limit = 0  # every job's inputs through Redis
        await self.check_golden("imgmean", 20, by_reference=True)

    async def test_golden_pair_jobs_by_reference(self):
        self.client.inline_limit = 0
        await self.check_golden("pair", 10, by_reference=True)

    async def test_inputs_of_32_kib_go_by_reference_and_give_the_inline_outputs(self):
        seq = np.random.default_rng().standard_normal((1024, 8)).astype(np.float32)  # 32 KiB exactly
        by_ref = await self.client.submit("seqpool", [seq], cache=False)
        short = await self.client.submit("seqpool", [seq[:1023]], cache=False)  # one row short
        self.client.inline_limit = 1 << 20
        inline = await self.client.submit("seqpool", [seq], cache=False)
        self.assertEqual([s.by_reference for s in (by_ref, short, inline)], [True, False, False])
        a, _, b = await self.client.wait_many([by_ref.id, short.id, inline.id], timeout=30)
        self.assertTrue(a.ok and b.ok and not a.cached and not b.cached, (a.error, b.error))
        np.testing.assert_array_equal(a.outputs[0], b.outputs[0])

    async def test_meta_version_cache_and_duplicates(self):
        x = np.random.default_rng().standard_normal(16).astype(np.float32)
        job_id = new_id("meta")
        first = await self.client.submit("mlp", [x], id=job_id, version="1", meta={"user": "u1", "a": "b"})
        again = await self.client.submit("mlp", [x], id=job_id, version="1")
        self.assertEqual((first.duplicate, again.duplicate), (False, True))
        r = await self.client.wait(job_id, 30)
        self.assertEqual((r.status, r.version, r.meta, r.cached), ("ok", "1", {"user": "u1", "a": "b"}, False))
        cached = await self.client.infer("mlp", [x], timeout=30)
        self.assertTrue(cached.cached)
        np.testing.assert_array_equal(cached.outputs[0], r.outputs[0])
        fresh = await self.client.infer("mlp", [x], cache=False, timeout=30)
        self.assertFalse(fresh.cached)
        unknown_version = await self.client.infer("mlp", [x], version="999", check=False, timeout=30)
        self.assertEqual(unknown_version.error.code, "unknown_model")

    async def test_wait_many_over_many_ids_shares_one_subscription(self):
        ids = [(await self.client.submit("mlp", [np.full(16, i, np.float32)])).id for i in range(80)]
        results = await self.client.wait_many(ids, timeout=60)
        self.assertEqual([r.id for r in results], ids)
        self.assertTrue(all(r.ok for r in results))


@needs_stack
class PublishRefusals(unittest.IsolatedAsyncioTestCase):
    """Against a bare nats-server: the streams are the tests' own."""

    async def asyncSetUp(self):
        self.nats = BareNats().__enter__()
        self.client = await AsyncClient.connect(self.nats.url, REDIS_URL)
        self.redis = aioredis.Redis.from_url(normalize_redis_url(REDIS_URL))

    async def asyncTearDown(self):
        await self.client.close()
        await self.redis.aclose()
        self.nats.__exit__()

    async def test_missing_full_and_other_refusals_are_told_apart(self):
        x = [np.ones(16, np.float32)]
        with self.assertRaises(StreamMissing) as caught:
            await self.client.submit("mlp", x, priority="p1")
        self.assertEqual(caught.exception.subject, "jetinfer.jobs.p1.mlp")
        js = self.client.js
        await js.add_stream(name="JETINFER_P1", subjects=["jetinfer.jobs.p1.>"], max_msgs=1,
                            discard=DiscardPolicy.NEW)
        await js.add_stream(name="JETINFER_P0", subjects=["jetinfer.jobs.p0.>"], max_msg_size=1024)
        await self.client.submit("mlp", x, priority="p1")
        with self.assertRaises(StreamFull):
            await self.client.submit("mlp", x, priority="p1")
        await self.client.submit("mlp", x, priority="p0")  # each priority counts on its own
        with self.assertRaises(Rejected) as caught:
            await self.client.submit("mlp", [np.ones(512, np.float32)], priority="p0")  # over max_msg_size
        self.assertNotIsInstance(caught.exception, (StreamFull, StreamMissing))
        with self.assertRaises(StreamMissing):
            await self.client.submit("mlp", x, priority="p2")

    async def test_inputs_are_stored_with_their_ttl_before_the_job_is_published(self):
        await self.client.js.add_stream(name="JETINFER_P1", subjects=["jetinfer.jobs.p1.>"])
        self.client.inline_limit = 0
        inputs = [np.arange(16, dtype=np.float32)]
        for deadline_in, want_ttl in ((None, INPUTS_TTL_MS), (20.0, 20_000 + INPUTS_TTL_MARGIN_MS)):
            sub = await self.client.submit("mlp", inputs, deadline_in=deadline_in)
            self.assertTrue(sub.by_reference)
            stored = await self.redis.get(input_key(sub.id))
            ttl = await self.redis.pttl(input_key(sub.id))
            self.assertTrue(want_ttl - 5_000 < ttl <= want_ttl, (deadline_in, ttl))
            msg = await self.client.js.get_last_msg("JETINFER_P1", "jetinfer.jobs.p1.mlp")
            self.assertEqual(msg.headers["Nats-Msg-Id"], sub.id)
            job = msgpack.unpackb(msg.data, raw=False)
            self.assertEqual(job["inputs"], [])
            self.assertEqual(job["inputs_ref"], {"bytes": len(stored),
                                                 "digest": jetinfer.inputs_digest([jetinfer.Tensor.from_numpy(inputs[0])])})
            self.assertEqual(msgpack.unpackb(stored, raw=False)[0]["data"], inputs[0].tobytes())
        # Redis down: nothing is published.
        before = (await self.client.js.stream_info("JETINFER_P1")).state.messages
        broken = await AsyncClient.connect(self.nats.url, "unix:///nonexistent/jetinfer.sock", inline_limit=0)
        try:
            with self.assertRaises(StoreError):
                await broken.submit("mlp", inputs)
        finally:
            await broken.close()
        self.assertEqual((await self.client.js.stream_info("JETINFER_P1")).state.messages, before)


if __name__ == "__main__":
    unittest.main()
