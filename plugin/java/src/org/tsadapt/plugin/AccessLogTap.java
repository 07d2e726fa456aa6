package org.tsadapt.plugin;

import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.logging.log4j.Level;
import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.core.Filter;
import org.apache.logging.log4j.core.LogEvent;
import org.apache.logging.log4j.core.LoggerContext;
import org.apache.logging.log4j.core.appender.AbstractAppender;
import org.apache.logging.log4j.core.config.Configuration;
import org.apache.logging.log4j.core.config.LoggerConfig;
import org.apache.logging.log4j.core.config.Property;

/**
 * A log4j2 appender on TorchServe's {@code ACCESS_LOG} logger that turns each access line
 * ({@code /127.0.0.1:44026 "POST /predictions/mlp HTTP/1.1" 200 48}) into per-model telemetry.
 */
final class AccessLogTap extends AbstractAppender {
    static final String LOGGER_NAME = "ACCESS_LOG";
    static final String APPENDER_NAME = "tsadapt_access_tap";
    /** Guard against unbounded growth from requests naming random models. */
    static final int MAX_MODELS = 4096;

    private static final Map<String, ModelTelemetry> TELEMETRY = new ConcurrentHashMap<>();
    private static final long STARTED_EPOCH_MS = System.currentTimeMillis();
    private static boolean attempted;
    private static volatile boolean installed;
    private static volatile String installNote = "not installed";

    private AccessLogTap() {
        super(APPENDER_NAME, (Filter) null, null, true, Property.EMPTY_ARRAY);
    }

    /**
     * Attach the tap to {@code ACCESS_LOG} once per JVM; never throws.
     *
     * @return true if this call did the (successful or failed) attempt, false if already done
     */
    static synchronized boolean install() {
        if (attempted) {
            return false;
        }
        attempted = true;
        try {
            LoggerContext ctx = (LoggerContext) LogManager.getContext(false);
            Configuration config = ctx.getConfiguration();
            AccessLogTap tap = new AccessLogTap();
            tap.start();
            config.addAppender(tap);
            LoggerConfig lc = config.getLoggerConfig(LOGGER_NAME);
            if (!LOGGER_NAME.equals(lc.getName())) {
                // The active log4j2 config has no ACCESS_LOG logger: add one that forwards to
                // its parent only if the parent logged these INFO lines before.
                lc = new LoggerConfig(LOGGER_NAME, Level.INFO, admitsInfo(lc.getLevel()));
                config.addLogger(LOGGER_NAME, lc);
            }
            lc.addAppender(tap, Level.INFO, null);
            ctx.updateLoggers();
            installed = admitsInfo(lc.getLevel());
            installNote = "attached to logger " + lc.getName() + " (level " + lc.getLevel() + ")"
                    + (installed ? "" : ": that level drops access lines, no telemetry");
        } catch (Throwable t) {
            installNote = "failed: " + t;
        }
        return true;
    }

    private static boolean admitsInfo(Level level) {
        return level == null || level.isLessSpecificThan(Level.INFO);
    }

    static boolean isInstalled() {
        return installed;
    }

    static String installNote() {
        return installNote;
    }

    static long startedEpochMs() {
        return STARTED_EPOCH_MS;
    }

    /** Count one batch of {@code model} (a registered model only). */
    static void recordBatch(String model) {
        ModelTelemetry t = TELEMETRY.get(model);
        if (t == null) {
            if (TELEMETRY.size() >= MAX_MODELS || !ModelStates.isRegistered(model)) {
                return;
            }
            t = TELEMETRY.computeIfAbsent(model, k -> new ModelTelemetry());
        }
        t.batches.increment();
    }

    /** Telemetry for {@code model}, or {@code null} when no request for it was seen yet. */
    static ModelTelemetry telemetry(String model) {
        return TELEMETRY.get(model);
    }

    @Override
    public void append(LogEvent event) {
        try {
            record(event.getMessage().getFormattedMessage());
        } catch (RuntimeException e) {
            // Telemetry must never disturb request handling.
        }
    }

    /** Parse one access-log message and count it; returns the model name or {@code null}. */
    static String record(String line) {
        AccessLine parsed = AccessLine.parse(line);
        if (parsed == null || parsed.model == null) {
            return null;
        }
        ModelTelemetry t = TELEMETRY.get(parsed.model);
        if (t == null) {
            if (TELEMETRY.size() >= MAX_MODELS || !ModelStates.isRegistered(parsed.model)) {
                return null;
            }
            t = TELEMETRY.computeIfAbsent(parsed.model, k -> new ModelTelemetry());
        }
        t.record(parsed.status, parsed.latencyMs);
        return parsed.model;
    }

    /** One parsed access-log line. */
    static final class AccessLine {
        final String model;
        final int status;
        final long latencyMs;

        private AccessLine(String model, int status, long latencyMs) {
            this.model = model;
            this.status = status;
            this.latencyMs = latencyMs;
        }

        /** {@code REMOTE "METHOD URI PROTOCOL" STATUS LATENCY_MS}; {@code null} if malformed. */
        static AccessLine parse(String line) {
            if (line == null) {
                return null;
            }
            int q1 = line.indexOf('"');
            int q2 = line.lastIndexOf('"');
            if (q1 < 0 || q2 <= q1) {
                return null;
            }
            String[] request = line.substring(q1 + 1, q2).trim().split(" ");
            String[] tail = line.substring(q2 + 1).trim().split("\\s+");
            if (request.length < 2 || tail.length < 2) {
                return null;
            }
            try {
                int status = Integer.parseInt(tail[0]);
                long latency = Long.parseLong(tail[1]);
                return new AccessLine(modelFromUri(request[1]), status, latency);
            } catch (NumberFormatException e) {
                return null;
            }
        }
    }

    /**
     * Model name of an inference URI: {@code /predictions/M[/V]}, {@code /explanations/M[/V]},
     * {@code /v1/models/M:predict|:explain}, {@code /v2/models/M[/versions/V]/infer}; else null.
     */
    static String modelFromUri(String uri) {
        int q = uri.indexOf('?');
        String path = q >= 0 ? uri.substring(0, q) : uri;
        String[] seg = path.split("/");
        // seg[0] is "" for a leading slash.
        if (seg.length < 3 || !seg[0].isEmpty()) {
            return null;
        }
        String model = null;
        switch (seg[1]) {
            case "predictions":
            case "explanations":
                model = seg[2];
                break;
            case "v1":
                if (seg.length == 4 && "models".equals(seg[2])) {
                    int colon = seg[3].lastIndexOf(':');
                    model = colon > 0 ? seg[3].substring(0, colon) : null;
                }
                break;
            case "v2":
                boolean infer = "infer".equals(seg[seg.length - 1]);
                if (seg.length >= 5 && "models".equals(seg[2]) && infer) {
                    model = seg[3];
                }
                break;
            default:
                break;
        }
        return model == null || model.isEmpty() ? null : decode(model);
    }

    private static String decode(String s) {
        try {
            return URLDecoder.decode(s, StandardCharsets.UTF_8);
        } catch (IllegalArgumentException e) {
            return s;
        }
    }
}
