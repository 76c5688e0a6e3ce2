package dev.esexport.localnode;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.LocalNode;
import org.elasticsearch.node.Node;
import org.elasticsearch.transport.netty4.Netty4Plugin;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Starts a single-node Elasticsearch bound to 127.0.0.1 and keeps it running until the JVM is told to stop.
 *
 * <pre>
 * Main --home DIR [--port 9200] [--cluster-name NAME] [--node-name NAME]
 * </pre>
 * Each option can also come from a system property: es.local.home, es.local.port, es.local.cluster, es.local.node.
 */
public final class Main {
    // Lucene logs through java.util.logging (e.g. an INFO line about the vector API). Keep it to warnings;
    // held in a field because JUL only keeps weak references to configured loggers.
    private static final java.util.logging.Logger LUCENE_JUL = java.util.logging.Logger.getLogger("org.apache.lucene");

    public static void main(String[] args) throws Exception {
        LUCENE_JUL.setLevel(java.util.logging.Level.WARNING);
        String home = option(args, "--home", "es.local.home", null);
        if (home == null) {
            System.err.println("usage: Main --home DIR [--port 9200] [--cluster-name NAME] [--node-name NAME]");
            System.exit(2);
        }
        int port = Integer.parseInt(option(args, "--port", "es.local.port", "9200"));
        String clusterName = option(args, "--cluster-name", "es.local.cluster", "es-local");
        String nodeName = option(args, "--node-name", "es.local.node", "es-local-node");

        Path homeDir = Path.of(home).toAbsolutePath();
        Files.createDirectories(homeDir.resolve("config")); // Environment expects $home/config to exist

        Settings settings = Settings.builder()
            .put("cluster.name", clusterName)
            .put("node.name", nodeName)
            .put("path.home", homeDir.toString())
            .put("path.data", homeDir.resolve("data").toString())
            .put("path.logs", homeDir.resolve("logs").toString())
            // Loopback only; single-node discovery also means production bootstrap checks don't apply.
            .put("network.host", "127.0.0.1")
            .put("http.port", port)
            .put("transport.port", "9300-9400")
            .put("discovery.type", "single-node")
            // Dev/test machines are often low on disk; don't let the node flip indices to read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.destructive_requires_name", false)
            // Root log level for the console logger configured below: only warnings and errors.
            .put("logger.level", "WARN")
            // ES's native libs are not on Maven Central; their absence is expected, don't print a stack trace.
            .put("logger.org.elasticsearch.nativeaccess", "ERROR")
            .build();

        // Elasticsearch's own console logging (no log4j2.properties needed).
        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);

        // Netty4Plugin: HTTP server + transport layer (without it there is no REST endpoint).
        // RootInfoPlugin: GET / and HEAD /, normally from the rest-root module (not on Maven Central).
        Environment env = new Environment(settings, homeDir.resolve("config"));
        Node node = new LocalNode(env, List.of(Netty4Plugin.class, RootInfoPlugin.class));

        // Node threads are daemons, so the main thread waits on this latch to keep the JVM up.
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(10, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "es-local-shutdown"));

        node.start();
        System.out.println("[es-local] started on http://127.0.0.1:" + port + " (home " + homeDir + ")");
        System.out.flush();
        stopped.await();
    }

    /** Value of "--name value" / "--name=value" from args, else the system property, else the default. */
    private static String option(String[] args, String name, String property, String defaultValue) {
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals(name) && i + 1 < args.length) return args[i + 1];
            if (args[i].startsWith(name + "=")) return args[i].substring(name.length() + 1);
        }
        return System.getProperty(property, defaultValue);
    }
}
