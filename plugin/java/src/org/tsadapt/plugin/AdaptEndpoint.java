package org.tsadapt.plugin;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.pytorch.serve.servingsdk.Context;
import org.pytorch.serve.servingsdk.ModelServerEndpoint;
import org.pytorch.serve.servingsdk.annotations.Endpoint;
import org.pytorch.serve.servingsdk.annotations.helpers.EndpointTypes;
import org.pytorch.serve.servingsdk.http.Request;
import org.pytorch.serve.servingsdk.http.Response;
import org.pytorch.serve.wlm.Model;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code /adapt} on the management port (token-protected like the rest of that port).
 *
 * <ul>
 *   <li>{@code GET /adapt}: plugin info.
 *   <li>{@code GET /adapt/models}: JSON array, one state object per model (default version).
 *   <li>{@code GET /adapt/models/{name}}: one state object.
 *   <li>{@code PUT /adapt/models/{name}?batch_size=B&max_batch_delay_ms=D}: live change.
 *   <li>{@code POST /adapt/models/{name}/drain?keep=N[&timeout_ms=T]}: let the workers a
 *       scale-down to N would remove finish their batch and stop ({@link WorkerDrain}).
 * </ul>
 */
@Endpoint(
        urlPattern = "adapt",
        endpointType = EndpointTypes.MANAGEMENT,
        description = "tsadapt: live batching control and per-model latency telemetry")
public class AdaptEndpoint extends ModelServerEndpoint {
    static final String PLUGIN_VERSION = "0.1.0";
    static final String BATCH_SIZE = "batch_size";
    static final String MAX_BATCH_DELAY_MS = "max_batch_delay_ms";
    static final int MAX_DELAY_MS = 60_000;
    private static final Set<String> PUT_PARAMS = Set.of(BATCH_SIZE, MAX_BATCH_DELAY_MS);
    private static final Logger LOG = LoggerFactory.getLogger("org.pytorch.serve.tsadapt");

    /**
     * Instantiated by TorchServe's PluginsManager at start-up (once per endpoint type it scans):
     * attach the access-log tap, once per JVM.
     */
    public AdaptEndpoint() {
        if (AccessLogTap.install()) {
            BatchTap.install();
            LOG.info("tsadapt plugin {}: access-log tap {}; batch tap {}", PLUGIN_VERSION,
                    AccessLogTap.installNote(), BatchTap.installNote());
        }
    }

    /** An error answered as TorchServe-style JSON. */
    static final class ApiError extends Exception {
        private static final long serialVersionUID = 1L;
        final int code;
        final String type;

        ApiError(int code, String type, String message) {
            super(message, null, false, false);
            this.code = code;
            this.type = type;
        }
    }

    @FunctionalInterface
    private interface Handler {
        void handle(String[] path, Request req, Response rsp) throws ApiError, IOException;
    }

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        serve(req, rsp, this::get);
    }

    @Override
    public void doPut(Request req, Response rsp, Context ctx) throws IOException {
        serve(req, rsp, this::put);
    }

    @Override
    public void doPost(Request req, Response rsp, Context ctx) throws IOException {
        serve(req, rsp, this::post);
    }

    @Override
    public void doDelete(Request req, Response rsp, Context ctx) throws IOException {
        serve(req, rsp, AdaptEndpoint::notAllowed);
    }

    /** Run {@code handler}; every failure becomes a JSON error, nothing escapes. */
    private static void serve(Request req, Response rsp, Handler handler) throws IOException {
        try {
            handler.handle(pathSegments(req.getRequestURI()), req, rsp);
        } catch (ApiError e) {
            Json.send(rsp, e.code, Json.error(e.code, e.type, e.getMessage()));
        } catch (RuntimeException e) {
            LOG.error("tsadapt plugin: unexpected error", e);
            Json.send(rsp, 500, Json.error(500, "InternalServerError", String.valueOf(e)));
        }
    }

    /** Path segments after {@code /adapt}, without the query string or empty segments. */
    static String[] pathSegments(String uri) {
        String path = uri == null ? "" : uri;
        int q = path.indexOf('?');
        if (q >= 0) {
            path = path.substring(0, q);
        }
        String[] all = path.replaceAll("/+", "/").replaceAll("^/|/$", "").split("/");
        if (all.length == 0 || !"adapt".equals(all[0])) {
            return new String[0];
        }
        String[] rest = new String[all.length - 1];
        System.arraycopy(all, 1, rest, 0, rest.length);
        return rest;
    }

    private static void notAllowed(String[] path, Request req, Response rsp) throws ApiError {
        throw new ApiError(405, "MethodNotAllowed",
                "only GET, PUT and POST .../drain are supported under /adapt");
    }

    private void post(String[] path, Request req, Response rsp) throws ApiError, IOException {
        if (path.length != 3 || !"models".equals(path[0]) || !"drain".equals(path[2])) {
            throw new ApiError(405, "MethodNotAllowed",
                    "POST is only for /adapt/models/{name}/drain?keep=N");
        }
        Model model = requireModel(path[1]);
        Map<String, List<String>> params = req.getParameterMap();
        for (String key : params.keySet()) {
            if (!"keep".equals(key) && !"timeout_ms".equals(key)) {
                throw badRequest("unknown parameter '" + key + "'; expected keep and timeout_ms");
            }
        }
        Integer keep = intParam(params, "keep");
        if (keep == null) {
            throw badRequest("give keep=N: the number of workers that stay");
        }
        Integer timeout = intParam(params, "timeout_ms");
        int waitMs = timeout == null ? WorkerDrain.DEFAULT_TIMEOUT_MS : timeout;
        if (waitMs > WorkerDrain.MAX_TIMEOUT_MS) {
            throw badRequest("timeout_ms must be in [0, " + WorkerDrain.MAX_TIMEOUT_MS + "], got "
                    + waitMs);
        }
        JsonObject result = WorkerDrain.drain(model, keep, waitMs);
        LOG.info("tsadapt: drained model {} to {} worker(s): {}", model.getModelName(), keep,
                result);
        Json.send(rsp, 200, result);
    }

    private void get(String[] path, Request req, Response rsp) throws ApiError, IOException {
        if (path.length == 0) {
            Json.send(rsp, 200, info());
        } else if (path.length == 1 && "models".equals(path[0])) {
            JsonArray all = new JsonArray();
            for (Model m : ModelStates.defaultModels().values()) {
                all.add(ModelStates.toJson(m));
            }
            Json.send(rsp, 200, all);
        } else if (path.length == 2 && "models".equals(path[0])) {
            Json.send(rsp, 200, ModelStates.toJson(requireModel(path[1])));
        } else {
            throw notFound(path);
        }
    }

    private void put(String[] path, Request req, Response rsp) throws ApiError, IOException {
        if (path.length != 2 || !"models".equals(path[0])) {
            if (path.length == 1 && "models".equals(path[0]) || path.length == 0) {
                throw new ApiError(405, "MethodNotAllowed", "PUT needs /adapt/models/{name}");
            }
            throw notFound(path);
        }
        Model model = requireModel(path[1]);
        Map<String, List<String>> params = req.getParameterMap();
        for (String key : params.keySet()) {
            if (!PUT_PARAMS.contains(key)) {
                throw badRequest("unknown parameter '" + key + "'; expected " + BATCH_SIZE
                        + " and/or " + MAX_BATCH_DELAY_MS);
            }
        }
        Integer batch = intParam(params, BATCH_SIZE);
        Integer delay = intParam(params, MAX_BATCH_DELAY_MS);
        if (batch == null && delay == null) {
            throw badRequest("give " + BATCH_SIZE + " and/or " + MAX_BATCH_DELAY_MS);
        }
        int capacity = ModelStates.queueCapacity(model);
        if (batch != null && (batch < 1 || batch > capacity)) {
            throw badRequest(BATCH_SIZE + " must be in [1, " + capacity
                    + "] (the model's job queue capacity), got " + batch);
        }
        if (delay != null && delay > MAX_DELAY_MS) {
            throw badRequest(MAX_BATCH_DELAY_MS + " must be in [0, " + MAX_DELAY_MS + "], got "
                    + delay);
        }
        apply(model, batch, delay);
        Json.send(rsp, 200, ModelStates.toJson(model));
    }

    /** Set the fields {@code Model.pollInferJob} reads on every batch: effective next batch. */
    private static void apply(Model model, Integer batch, Integer delay) {
        int oldBatch = model.getBatchSize();
        int oldDelay = model.getMaxBatchDelay();
        if (batch != null) {
            model.setBatchSize(batch);
        }
        if (delay != null) {
            model.setMaxBatchDelay(delay);
        }
        LOG.info("tsadapt: model {} v{} batch_size {} -> {}, max_batch_delay_ms {} -> {}",
                model.getModelName(), model.getVersion(), oldBatch, model.getBatchSize(),
                oldDelay, model.getMaxBatchDelay());
    }

    /** A non-negative decimal integer parameter that fits an int, or null when absent. */
    static Integer intParam(Map<String, List<String>> params, String name) throws ApiError {
        List<String> values = params.get(name);
        if (values == null) {
            return null;
        }
        if (values.size() != 1) {
            throw badRequest("parameter '" + name + "' given " + values.size() + " times");
        }
        String raw = values.get(0).trim();
        if (!raw.matches("[+-]?[0-9]+")) {
            throw badRequest("parameter '" + name + "' must be an integer, got '"
                    + abbreviate(raw) + "'");
        }
        if (raw.startsWith("-") && !raw.matches("-0+")) {
            throw badRequest("parameter '" + name + "' must not be negative, got '"
                    + abbreviate(raw) + "'");
        }
        String digits = raw.replaceFirst("^[+-]?0*", "");
        long value = digits.isEmpty() ? 0 : digits.length() > 10 ? Long.MAX_VALUE
                : Long.parseLong(digits);
        if (value > Integer.MAX_VALUE) {
            throw badRequest("parameter '" + name + "' is too large: '" + abbreviate(raw) + "'");
        }
        return (int) value;
    }

    private static String abbreviate(String s) {
        return s.length() <= 40 ? s : s.substring(0, 40) + "...";
    }

    private static Model requireModel(String name) throws ApiError {
        Model m = ModelStates.defaultModel(name);
        if (m == null) {
            throw new ApiError(404, "ModelNotFound", "Model not found: " + name);
        }
        return m;
    }

    private static ApiError badRequest(String message) {
        return new ApiError(400, "BadRequest", message);
    }

    private static ApiError notFound(String[] path) {
        return new ApiError(404, "NotFound",
                "no such resource: /adapt/" + String.join("/", path)
                        + " (use /adapt/models or /adapt/models/{name})");
    }

    private static JsonObject info() {
        JsonObject o = new JsonObject();
        o.addProperty("plugin", "tsadapt");
        o.addProperty("version", PLUGIN_VERSION);
        o.addProperty("access_log_tap", AccessLogTap.installNote());
        o.addProperty("batch_tap", BatchTap.installNote());
        o.addProperty("since_epoch_ms", AccessLogTap.startedEpochMs());
        JsonArray bounds = new JsonArray();
        for (long b : LatencyHistogram.BOUNDS_MS) {
            bounds.add(b);
        }
        o.add("bucket_upper_ms", bounds);
        return o;
    }
}
