package org.tsadapt.plugin;

import java.util.concurrent.atomic.LongAdder;

/** Per-model request counters plus the latency histogram of successful (2xx) requests. */
final class ModelTelemetry {
    final LongAdder requests = new LongAdder();
    final LongAdder status2xx = new LongAdder();
    final LongAdder status4xx = new LongAdder();
    final LongAdder status5xx = new LongAdder();
    final LongAdder statusOther = new LongAdder();
    /** Batches the model's workers got back from their backends (see {@link BatchTap}). */
    final LongAdder batches = new LongAdder();
    /** Latency of 2xx responses only: fast 4xx/5xx rejections would flatter the percentiles. */
    final LatencyHistogram latency2xx = new LatencyHistogram();

    void record(int status, long latencyMs) {
        requests.increment();
        if (status >= 200 && status < 300) {
            status2xx.increment();
            latency2xx.record(latencyMs);
        } else if (status >= 400 && status < 500) {
            status4xx.increment();
        } else if (status >= 500 && status < 600) {
            status5xx.increment();
        } else {
            statusOther.increment();
        }
    }
}
