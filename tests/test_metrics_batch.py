"""webhook.metrics.Batch: what it counts and writes at a flush is what writing each count at
once would have written — every bucket, sum and label set — and nothing is lost to threads."""

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from webhook.metrics import Batch

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# below the first bound, on bounds (a bucket holds what is at most its bound), between, past the last
VALUES = (0.0, 0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 1.0, 3.0, 0.001, 42.0)


def metrics():
    registry = CollectorRegistry()
    histogram = Histogram("review_seconds", "d", ["outcome"], buckets=BUCKETS, registry=registry)
    plain = Histogram("operations", "d", buckets=(0, 1, 5), registry=registry)
    counter = Counter("reviews", "d", ["outcome", "job_type"], registry=registry)
    gauge = Gauge("in_flight", "d", registry=registry)
    return registry, histogram, plain, counter, gauge


def samples(registry):
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def count_into(batch, histogram, plain, counter, gauge):
    for value in VALUES:
        batch.observe(histogram, value, ("mutated",))
        batch.observe(histogram, value * 2, ("failed",))
        batch.observe(plain, round(value * 3))
        batch.inc(counter, ("mutated", "sync"))
        batch.inc(gauge)
    batch.inc(counter, ("denied", ""), amount=3)
    batch.inc(counter, (["not", "a", "str"], None))  # written as prometheus-client writes them: str()
    batch.inc(gauge, amount=-4)


def count_directly(histogram, plain, counter, gauge):
    for value in VALUES:
        histogram.labels("mutated").observe(value)
        histogram.labels("failed").observe(value * 2)
        plain.observe(round(value * 3))
        counter.labels("mutated", "sync").inc()
        gauge.inc()
    counter.labels("denied", "").inc(3)
    counter.labels(["not", "a", "str"], None).inc()
    gauge.inc(-4)


def test_a_held_batch_writes_at_its_flush_what_counting_at_once_writes():
    held, *held_metrics = metrics()
    batch = Batch()
    batch.hold()
    count_into(batch, *held_metrics)
    before = samples(held)  # nothing written yet
    assert ("reviews_total", (("job_type", "sync"), ("outcome", "mutated"))) not in before
    assert before[("in_flight", ())] == 0
    batch.flush()

    direct, *direct_metrics = metrics()
    count_directly(*direct_metrics)
    assert samples(held) == samples(direct)
    assert (
        samples(held)[("review_seconds_bucket", (("le", "0.001"), ("outcome", "mutated")))] == 4
    )  # 0.0, 0.0005 and 0.001 twice
    assert samples(held)[("in_flight", ())] == len(VALUES) - 4

    batch.flush()  # nothing counted since: nothing changes
    assert samples(held) == samples(direct)


def test_a_batch_not_held_writes_each_count_at_once():
    registry, histogram, plain, counter, gauge = metrics()
    batch = Batch()
    batch.inc(counter, ("mutated", "sync"))
    batch.observe(histogram, 0.05, ("mutated",))
    found = samples(registry)
    assert found[("reviews_total", (("job_type", "sync"), ("outcome", "mutated")))] == 1
    assert found[("review_seconds_count", (("outcome", "mutated"),))] == 1
    assert found[("review_seconds_bucket", (("le", "0.1"), ("outcome", "mutated")))] == 1
    assert found[("review_seconds_bucket", (("le", "0.01"), ("outcome", "mutated")))] == 0


@pytest.mark.parametrize("flushing", [False, True], ids=["flushed-after", "flushed-meanwhile"])
def test_counts_from_many_threads_are_all_written(flushing):
    registry, histogram, plain, counter, gauge = metrics()
    batch = Batch()
    batch.hold()
    threads, each = 8, 2000
    done = threading.Event()

    def counting():
        for _ in range(each):
            batch.inc(counter, ("mutated", "sync"))
            batch.observe(histogram, 0.005, ("mutated",))

    def flushing_meanwhile():
        while not done.is_set():
            batch.flush()

    workers = [threading.Thread(target=counting) for _ in range(threads)]
    flusher = threading.Thread(target=flushing_meanwhile) if flushing else None
    for thread in [*workers, *([flusher] if flusher else [])]:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    if flusher:
        flusher.join()
    batch.flush()
    found = samples(registry)
    assert found[("reviews_total", (("job_type", "sync"), ("outcome", "mutated")))] == threads * each
    assert found[("review_seconds_count", (("outcome", "mutated"),))] == threads * each
    assert found[("review_seconds_sum", (("outcome", "mutated"),))] == pytest.approx(threads * each * 0.005)
