package org.tsadapt.plugin;

import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.LongAdder;

/**
 * Cumulative, lock-free latency histogram with fixed millisecond buckets.
 *
 * <p>Bucket {@code i} counts latencies {@code <= BOUNDS_MS[i]} and {@code > BOUNDS_MS[i-1]}
 * (Prometheus "le" semantics); the extra last bucket is the +Inf overflow.
 */
final class LatencyHistogram {
    /** Upper bounds in ms: 1..100 by 1, 110..200 by 10, 250..1000 by 50, 1500..5000 by 500, ... */
    static final long[] BOUNDS_MS = buildBounds();

    private final AtomicLongArray counts = new AtomicLongArray(BOUNDS_MS.length + 1);
    private final LongAdder sumMs = new LongAdder();

    private static long[] buildBounds() {
        long[] b = new long[100 + 10 + 16 + 8 + 3];
        int i = 0;
        for (long v = 1; v <= 100; v++) {
            b[i++] = v;
        }
        for (long v = 110; v <= 200; v += 10) {
            b[i++] = v;
        }
        for (long v = 250; v <= 1000; v += 50) {
            b[i++] = v;
        }
        for (long v = 1500; v <= 5000; v += 500) {
            b[i++] = v;
        }
        b[i++] = 10_000;
        b[i++] = 30_000;
        b[i++] = 60_000;
        return b;
    }

    /** Index of the bucket that holds {@code latencyMs} (binary search over the bounds). */
    static int bucketIndex(long latencyMs) {
        int lo = 0;
        int hi = BOUNDS_MS.length; // == overflow index
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (BOUNDS_MS[mid] >= latencyMs) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        return lo;
    }

    void record(long latencyMs) {
        long ms = Math.max(0, latencyMs);
        counts.incrementAndGet(bucketIndex(ms));
        sumMs.add(ms);
    }

    /** Per-bucket (non-cumulative) counts; the last entry is the +Inf bucket. */
    long[] snapshotCounts() {
        long[] out = new long[counts.length()];
        for (int i = 0; i < out.length; i++) {
            out[i] = counts.get(i);
        }
        return out;
    }

    long sumMs() {
        return sumMs.sum();
    }
}
