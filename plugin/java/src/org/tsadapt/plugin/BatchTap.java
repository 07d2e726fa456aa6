package org.tsadapt.plugin;

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
 * Counts batches per model from the frontend, whatever the handler: TorchServe's worker thread
 * (named {@code W-<port>-<model>_<version>}) logs {@code Backend response time: N} at INFO once
 * per batch it gets back from its backend. Requests over batches is the mean batch size.
 *
 * <p>Attached to the logger config that already governs {@code WorkerThread}, at its level:
 * when that level drops INFO the count stays 0 (unknown), and nothing in the user's logs changes.
 */
final class BatchTap extends AbstractAppender {
    static final String LOGGER_NAME = "org.pytorch.serve.wlm.WorkerThread";
    static final String APPENDER_NAME = "tsadapt_batch_tap";
    static final String MESSAGE_PREFIX = "Backend response time";

    private static boolean attempted;
    private static volatile boolean installed;
    private static volatile String installNote = "not installed";

    private BatchTap() {
        super(APPENDER_NAME, (Filter) null, null, true, Property.EMPTY_ARRAY);
    }

    /** Attach once per JVM; never throws. */
    static synchronized void install() {
        if (attempted) {
            return;
        }
        attempted = true;
        try {
            LoggerContext ctx = (LoggerContext) LogManager.getContext(false);
            Configuration config = ctx.getConfiguration();
            BatchTap tap = new BatchTap();
            tap.start();
            config.addAppender(tap);
            LoggerConfig lc = config.getLoggerConfig(LOGGER_NAME);
            lc.addAppender(tap, Level.INFO, null);
            ctx.updateLoggers();
            Level level = lc.getLevel();
            installed = level == null || level.isLessSpecificThan(Level.INFO);
            installNote = "attached to logger " + lc.getName() + " (level " + level + ")"
                    + (installed ? "" : ": that level drops the batch lines, no batch counts");
        } catch (Throwable t) {
            installNote = "failed: " + t;
        }
    }

    static boolean isInstalled() {
        return installed;
    }

    static String installNote() {
        return installNote;
    }

    @Override
    public void append(LogEvent event) {
        try {
            if (!LOGGER_NAME.equals(event.getLoggerName())) {
                return;
            }
            String message = event.getMessage().getFormattedMessage();
            if (message == null || !message.startsWith(MESSAGE_PREFIX)) {
                return;
            }
            String model = modelOfWorker(event.getThreadName());
            if (model != null) {
                AccessLogTap.recordBatch(model);
            }
        } catch (RuntimeException e) {
            // Telemetry must never disturb request handling.
        }
    }

    /** {@code W-9000-my_model_1.0} -> {@code my_model}; {@code null} for any other name. */
    static String modelOfWorker(String thread) {
        if (thread == null || !thread.startsWith("W-")) {
            return null;
        }
        int dash = thread.indexOf('-', 2);
        int version = thread.lastIndexOf('_');
        if (dash < 0 || version <= dash + 1) {
            return null;
        }
        return thread.substring(dash + 1, version);
    }
}
