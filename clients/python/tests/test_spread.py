"""Jobs spread over partition streams and inputs over input stores, against a real stack
(section 2.1 and section 10 of docs/wire-format.md). The stack tells its layout in the
environment: JETINFER_TEST_PARTITIONS (the dispatcher's --partitions, default 1) and
JETINFER_TEST_INPUTS_REDIS_URLS (the workers' --inputs-redis-url list, comma-separated,
default none), so the same tests check a plain stack (everything in partition 0 and
store 0) and a spread one (tests/tests/python_client.rs runs both). The count's re-reading
is checked against a bare nats-server whose streams the test makes."""
import os
import sys
import unittest
import uuid
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).parent))
import stackenv  # noqa: E402
from stackenv import NATS_URL, REDIS_URL, BareNats, golden_samples, mismatch  # noqa: E402

from jetinfer import AsyncClient, Priority, StreamMissing  # noqa: E402
from jetinfer.aio import normalize_redis_url  # noqa: E402
from jetinfer.wire import PARTITIONS_METADATA_KEY, input_key, input_store_for, partition_for, partition_stream  # noqa: E402

PARTITIONS = int(os.environ.get("JETINFER_TEST_PARTITIONS", "1"))
INPUTS_REDIS_URLS = [u for u in os.environ.get("JETINFER_TEST_INPUTS_REDIS_URLS", "").split(",") if u]

needs_stack = unittest.skipUnless(NATS_URL and REDIS_URL, stackenv.SKIP_REASON)


def new_id(tag: str) -> str:
    return f"pyspread-{tag}-{uuid.uuid4().hex[:12]}"


@needs_stack
class SpreadOnTheStack(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        # Before the first test's "-v" line, so the Rust test can read both.
        print(f"stack layout: partitions={PARTITIONS} input_stores={1 + len(INPUTS_REDIS_URLS)}", file=sys.stderr)

    async def asyncSetUp(self):
        # Every job by reference, so both spreads are exercised by the same jobs.
        self.client = await AsyncClient.connect(NATS_URL, REDIS_URL, inputs_redis_urls=INPUTS_REDIS_URLS,
                                                inline_limit=0)
        self.stores = [aioredis.Redis.from_url(normalize_redis_url(u)) for u in [REDIS_URL, *INPUTS_REDIS_URLS]]

    async def asyncTearDown(self):
        await self.client.close()
        for store in self.stores:
            await store.aclose()

    async def holders(self, ids):
        """Per id, the indexes of the stores that hold its inputs."""
        held = [set() for _ in ids]
        for n, store in enumerate(self.stores):
            values = await store.mget([input_key(i) for i in ids])
            for k, v in enumerate(values):
                if v is not None:
                    held[k].add(n)
        return held

    async def test_jobs_spread_over_every_partition_and_all_results_are_right(self):
        samples = golden_samples("mlp", 201)
        prios = [Priority.P0, Priority.P1, Priority.P2]
        subs = [await self.client.submit("mlp", ins, priority=prios[i % 3], id=new_id("mlp"), cache=False)
                for i, (ins, _) in enumerate(samples)]
        self.assertTrue(all(s.by_reference for s in subs))
        # JetStream's ack names the stream that stored each job: the id's partition.
        for prio in prios:
            self.assertEqual(await self.client.partitions.count(prio), PARTITIONS, prio)
        wrong = [(s.id, s.stream) for i, s in enumerate(subs)
                 if s.stream != partition_stream(prios[i % 3], partition_for(s.id, PARTITIONS))]
        self.assertEqual(wrong, [])
        for prio in prios:
            used = {s.stream for i, s in enumerate(subs) if prios[i % 3] == prio}
            self.assertEqual(used, {partition_stream(prio, k) for k in range(PARTITIONS)}, "every partition used")
        results = await self.client.wait_many([s.id for s in subs], timeout=120)
        bad = [f"{r.id}: {mismatch(r, outs)}" for r, (_, outs) in zip(results, samples) if mismatch(r, outs)]
        self.assertEqual(bad, [])
        self.assertFalse(any(r.cached for r in results))
        # The worker found every job's inputs in the store its reference named and deleted them there.
        self.assertEqual(await self.holders([s.id for s in subs]), [set()] * len(subs))

    async def test_each_input_store_holds_exactly_its_jobs_inputs(self):
        # The dispatcher answers jobs of an unknown model itself and leaves their inputs
        # (a dead letter's replay needs them): where they stay is where the client put them.
        ids = [new_id("nomodel") for _ in range(90)]
        for job_id in ids:
            await self.client.submit("no_such_model", [np.ones(4, np.float32)], id=job_id)
        results = await self.client.wait_many(ids, timeout=60)
        self.assertEqual({(r.status, r.error.code) for r in results}, {("error", "unknown_model")})
        held = await self.holders(ids)
        want = [{input_store_for(i, len(self.stores))} for i in ids]
        self.assertEqual(held, want)
        for n in range(len(self.stores)):
            self.assertGreater(sum(1 for h in held if n in h), 10, f"store {n} gets a share")
        for n, store in enumerate(self.stores):
            await store.delete(*[input_key(i) for i, h in zip(ids, held) if n in h])


@needs_stack
class PartitionCountOnABareServer(unittest.IsolatedAsyncioTestCase):
    """The count read from partition 0's metadata, and read again when a publish finds no stream."""

    async def asyncSetUp(self):
        self.nats = BareNats().__enter__()
        self.client = await AsyncClient.connect(self.nats.url, REDIS_URL)
        self.js = self.client.js

    async def asyncTearDown(self):
        await self.client.close()
        self.nats.__exit__()

    async def make_partitions(self, n: int):
        await self.js.add_stream(name="JETINFER_P1", subjects=["jetinfer.jobs.p1.*"],
                                 metadata={PARTITIONS_METADATA_KEY: str(n)})
        for k in range(1, n):
            await self.js.add_stream(name=f"JETINFER_P1_{k}", subjects=[f"jetinfer.jobs.p1.*.{k}"])

    def id_in(self, k: int, n: int, tag: str) -> str:
        return next(i for i in (new_id(f"{tag}{j}") for j in range(1000)) if partition_for(i, n) == k)

    async def test_a_client_started_before_the_streams_reads_the_count_once_they_exist(self):
        x = [np.ones(16, np.float32)]
        with self.assertRaises(StreamMissing):
            await self.client.submit("mlp", x, id=self.id_in(2, 3, "early"))
        await self.make_partitions(3)
        sub = await self.client.submit("mlp", x, id=self.id_in(2, 3, "later"))
        self.assertEqual(sub.stream, "JETINFER_P1_2")

    async def test_fewer_partitions_the_client_reads_again_and_publishes_again(self):
        x = [np.ones(16, np.float32)]
        await self.make_partitions(3)
        first = await self.client.submit("mlp", x, id=self.id_in(2, 3, "three"))
        self.assertEqual(first.stream, "JETINFER_P1_2")
        self.assertEqual(await self.client.partitions.count(Priority.P1), 3)
        # The dispatcher restarted with --partitions 2: partition 2 is gone, N is 2.
        await self.js.delete_stream("JETINFER_P1_2")
        info = await self.js.stream_info("JETINFER_P1")
        await self.js.update_stream(info.config.evolve(metadata={PARTITIONS_METADATA_KEY: "2"}))
        moved = self.id_in(2, 3, "moved")
        sub = await self.client.submit("mlp", x, id=moved)
        self.assertEqual(sub.stream, partition_stream(Priority.P1, partition_for(moved, 2)))
        self.assertEqual(await self.client.partitions.count(Priority.P1), 2)
        # A fixed count is not read again: the job's partition has no stream.
        fixed = await AsyncClient.connect(self.nats.url, REDIS_URL, partitions=3)
        try:
            with self.assertRaises(StreamMissing) as caught:
                await fixed.submit("mlp", x, id=self.id_in(2, 3, "fixed"))
            self.assertTrue(caught.exception.subject.endswith(".mlp.2"), caught.exception.subject)
        finally:
            await fixed.close()

    async def test_an_unreadable_count_is_one_partition_with_one_warning(self):
        # A producer allowed to publish jobs but not to read stream info.
        with BareNats(config="""
                authorization { users = [
                    { user: admin, password: a }
                    { user: producer, password: p, permissions: {
                        publish: { allow: ["jetinfer.jobs.>"] }, subscribe: { allow: ["_INBOX.>"] } } }
                ] }""") as secured:
            admin = await AsyncClient.connect(secured.url, REDIS_URL, nats_options={"user": "admin", "password": "a"})
            producer = await AsyncClient.connect(secured.url, REDIS_URL,
                                                 nats_options={"user": "producer", "password": "p"})
            try:
                self.js = admin.js
                await self.make_partitions(3)
                producer.js._timeout = 0.5  # the denied info request times out: do not wait 5 s
                with self.assertLogs("jetinfer", "WARNING") as logs:
                    subs = [await producer.submit("mlp", [np.ones(16, np.float32)], id=self.id_in(k % 3, 3, "denied"))
                            for k in range(6)]
            finally:
                await producer.close()
                await admin.close()
        self.assertEqual({s.stream for s in subs}, {"JETINFER_P1"})
        self.assertEqual(len(logs.records), 1, logs.output)
        self.assertIn("JETINFER_P1", logs.output[0])

    async def test_no_metadata_is_one_partition(self):
        await self.js.add_stream(name="JETINFER_P1", subjects=["jetinfer.jobs.p1.*"])
        await self.js.add_stream(name="JETINFER_P1_1", subjects=["jetinfer.jobs.p1.*.1"])
        subs = [await self.client.submit("mlp", [np.ones(16, np.float32)], id=new_id("plain")) for _ in range(20)]
        self.assertEqual({s.stream for s in subs}, {"JETINFER_P1"})


if __name__ == "__main__":
    unittest.main()
