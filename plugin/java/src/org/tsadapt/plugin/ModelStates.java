package org.tsadapt.plugin;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.lang.reflect.Field;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.BlockingDeque;
import org.pytorch.serve.job.Job;
import org.pytorch.serve.wlm.Model;
import org.pytorch.serve.wlm.ModelManager;
import org.pytorch.serve.wlm.WorkerState;
import org.pytorch.serve.wlm.WorkerThread;

/** Reads the live {@link Model} objects of TorchServe's frontend and renders them as JSON. */
final class ModelStates {
    /** {@code Model.jobsDb} (private): the per-model job queues, keyed by queue name. */
    private static final Field JOBS_DB = findField(Model.class, "jobsDb");

    private ModelStates() {}

    private static Field findField(Class<?> cls, String name) {
        try {
            Field f = cls.getDeclaredField(name);
            f.setAccessible(true);
            return f;
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null;
        }
    }

    /** The default version of {@code name}, or {@code null} when it is not registered. */
    static Model defaultModel(String name) {
        try {
            return ModelManager.getInstance().getModel(name, null);
        } catch (Exception e) {
            return null;
        }
    }

    static boolean isRegistered(String name) {
        return defaultModel(name) != null;
    }

    /** Default versions of all registered models, sorted by name. */
    static Map<String, Model> defaultModels() {
        return new TreeMap<>(ModelManager.getInstance().getDefaultModels());
    }

    /**
     * Queue capacity (job_queue_size). {@code size + remainingCapacity} of the same deque, read
     * until two sizes agree so a concurrent offer/poll does not skew it.
     */
    static int queueCapacity(Model m) {
        int sum = 0;
        for (int i = 0; i < 5; i++) {
            int before = m.getPendingRequestsInJobQueue();
            int remaining = m.getJobQueueRemainingCapacity();
            int after = m.getPendingRequestsInJobQueue();
            sum = before + remaining;
            if (before == after) {
                break;
            }
        }
        return sum;
    }

    /** Age in ms of the oldest job waiting in the data queue; 0 when empty, -1 if unreadable. */
    static double oldestQueuedAgeMs(Model m) {
        if (JOBS_DB == null) {
            return -1;
        }
        try {
            Object db = JOBS_DB.get(m);
            if (!(db instanceof Map)) {
                return -1;
            }
            Object queue = ((Map<?, ?>) db).get(Model.DEFAULT_DATA_QUEUE);
            if (!(queue instanceof BlockingDeque)) {
                return 0;
            }
            long now = System.nanoTime();
            long oldest = now;
            for (Object o : (BlockingDeque<?>) queue) {
                if (o instanceof Job) {
                    oldest = Math.min(oldest, ((Job) o).getBegin());
                }
            }
            return Math.round((now - oldest) / 1000.0) / 1000.0;
        } catch (IllegalAccessException | RuntimeException e) {
            return -1;
        }
    }

    /** Workers in WORKER_MODEL_LOADED state, and all workers, of {@code m}. */
    static int[] workerCounts(Model m) {
        int loaded = 0;
        int total = 0;
        for (WorkerThread w : ModelManager.getInstance().getWorkers(m.getModelVersionName())) {
            total++;
            if (w.getState() == WorkerState.WORKER_MODEL_LOADED) {
                loaded++;
            }
        }
        return new int[] {loaded, total};
    }

    static JsonObject toJson(Model m) {
        JsonObject o = new JsonObject();
        int[] workers = workerCounts(m);
        o.addProperty("name", m.getModelName());
        o.addProperty("version", m.getVersion());
        o.addProperty("batch_size", m.getBatchSize());
        o.addProperty("max_batch_delay_ms", m.getMaxBatchDelay());
        o.addProperty("min_workers", m.getMinWorkers());
        o.addProperty("max_workers", m.getMaxWorkers());
        o.addProperty("running_workers", workers[0]);
        o.addProperty("workers_total", workers[1]);
        o.addProperty("queue_depth", m.getPendingRequestsInJobQueue());
        o.addProperty("queue_remaining_capacity", m.getJobQueueRemainingCapacity());
        o.addProperty("queue_capacity", queueCapacity(m));
        o.addProperty("oldest_queued_age_ms", oldestQueuedAgeMs(m));
        o.addProperty("timestamp_ms", System.currentTimeMillis());
        o.add("telemetry", telemetryJson(AccessLogTap.telemetry(m.getModelName())));
        return o;
    }

    /** Counters since plugin start; {@code latency_2xx_ms} holds successful requests only. */
    static JsonObject telemetryJson(ModelTelemetry t) {
        JsonObject o = new JsonObject();
        o.addProperty("access_log_attached", AccessLogTap.isInstalled());
        o.addProperty("since_epoch_ms", AccessLogTap.startedEpochMs());
        o.addProperty("requests_total", t == null ? 0 : t.requests.sum());
        o.addProperty("responses_2xx", t == null ? 0 : t.status2xx.sum());
        o.addProperty("responses_4xx", t == null ? 0 : t.status4xx.sum());
        o.addProperty("responses_5xx", t == null ? 0 : t.status5xx.sum());
        o.addProperty("responses_other", t == null ? 0 : t.statusOther.sum());
        o.addProperty("batch_log_attached", BatchTap.isInstalled());
        o.addProperty("batches_total", t == null ? 0 : t.batches.sum());
        JsonObject h = new JsonObject();
        JsonArray bounds = new JsonArray();
        for (long b : LatencyHistogram.BOUNDS_MS) {
            bounds.add(b);
        }
        long[] counts =
                t == null ? new long[LatencyHistogram.BOUNDS_MS.length + 1] : t.latency2xx.snapshotCounts();
        JsonArray countsJson = new JsonArray();
        long total = 0;
        for (long c : counts) {
            countsJson.add(c);
            total += c;
        }
        h.add("bucket_upper_ms", bounds);
        h.add("counts", countsJson);
        h.addProperty("count", total);
        h.addProperty("sum_ms", t == null ? 0 : t.latency2xx.sumMs());
        o.add("latency_2xx_ms", h);
        return o;
    }
}
