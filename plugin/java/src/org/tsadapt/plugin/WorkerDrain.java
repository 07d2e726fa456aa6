package org.tsadapt.plugin;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.lang.reflect.Field;
import java.net.HttpURLConnection;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.pytorch.serve.wlm.Model;
import org.pytorch.serve.wlm.ModelManager;
import org.pytorch.serve.wlm.WorkerState;
import org.pytorch.serve.wlm.WorkerThread;

/**
 * Graceful scale-down: let the workers that a scale-down to {@code keep} would remove finish
 * their current batch and stop taking new ones, before the management API removes them.
 *
 * <p>TorchServe 0.12's scale-down ({@code WorkLoadManager.modelChanged}) removes the newest
 * worker threads (the tail of the model's worker list) and calls {@code WorkerThread.shutdown()},
 * which interrupts a thread in the middle of a batch. Its jobs are then re-queued by the
 * management thread ({@code BatchAggregator.sendError(null, ...)}) but the interrupted worker
 * thread's own {@code finally} answers the same batch with "Worker died." (HTTP 500): whichever
 * runs first wins, so a request can fail. Draining first removes the race: each tail thread is
 * marked {@code WORKER_SCALED_DOWN} (so it is never restarted) and its {@code running} flag is
 * cleared, so its loop ends after the batch it is serving; the later {@code shutdown()} then
 * finds no thread to interrupt and no job to fail.
 *
 * <p>A worker idle in the queue poll only ends after taking one more batch; with no traffic it is
 * still waiting when the timeout ends, holding no job, and the scale-down stops it as usual.
 */
final class WorkerDrain {
    private static final Field RUNNING = field("running");
    private static final Field CURRENT_THREAD = field("currentThread");
    static final int DEFAULT_TIMEOUT_MS = 5_000;
    static final int MAX_TIMEOUT_MS = 60_000;

    private WorkerDrain() {}

    private static Field field(String name) {
        try {
            Field f = WorkerThread.class.getDeclaredField(name);
            f.setAccessible(true);
            return f;
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null;
        }
    }

    static boolean supported() {
        return RUNNING != null && CURRENT_THREAD != null;
    }

    /** Drain the workers beyond the first {@code keep}; wait up to {@code timeoutMs}. */
    static JsonObject drain(Model model, int keep, int timeoutMs)
            throws AdaptEndpoint.ApiError {
        if (!supported()) {
            throw new AdaptEndpoint.ApiError(501, "NotImplemented",
                    "this TorchServe's WorkerThread has no running/currentThread fields");
        }
        List<WorkerThread> workers =
                ModelManager.getInstance().getWorkers(model.getModelVersionName());
        int total = workers.size();
        if (keep < 1 || keep >= total) {
            throw new AdaptEndpoint.ApiError(400, "BadRequest", "keep must be in [1, "
                    + (total - 1) + "] (the model has " + total + " worker(s)), got " + keep);
        }
        List<WorkerThread> tail = new ArrayList<>(workers.subList(keep, total));
        long start = System.nanoTime();
        for (WorkerThread w : tail) {
            w.setState(WorkerState.WORKER_SCALED_DOWN, HttpURLConnection.HTTP_OK);
            running(w).set(false);
        }
        long deadline = start + timeoutMs * 1_000_000L;
        while (System.nanoTime() < deadline && !allFinished(tail)) {
            try {
                Thread.sleep(2);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        JsonObject out = new JsonObject();
        out.addProperty("model", model.getModelName());
        out.addProperty("keep", keep);
        JsonArray drained = new JsonArray();
        for (WorkerThread w : tail) {
            JsonObject o = new JsonObject();
            o.addProperty("worker_id", w.getWorkerId());
            o.addProperty("finished", finished(w));
            drained.add(o);
        }
        out.add("drained", drained);
        out.addProperty("waited_ms", (System.nanoTime() - start) / 1_000_000L);
        return out;
    }

    private static AtomicBoolean running(WorkerThread w) {
        try {
            return (AtomicBoolean) RUNNING.get(w);
        } catch (IllegalAccessException e) {
            throw new IllegalStateException(e);
        }
    }

    private static boolean finished(WorkerThread w) {
        try {
            return ((AtomicReference<?>) CURRENT_THREAD.get(w)).get() == null;
        } catch (IllegalAccessException e) {
            throw new IllegalStateException(e);
        }
    }

    private static boolean allFinished(List<WorkerThread> tail) {
        for (WorkerThread w : tail) {
            if (!finished(w)) {
                return false;
            }
        }
        return true;
    }
}
