package dev.esexport;

import org.codelibs.opensearch.runner.OpenSearchRunner;

import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;

/**
 * A single-node OpenSearch for local development and tests, bound to 127.0.0.1.
 * Usage: LocalOpenSearch PORT DATA_DIR
 * The node's home (config, data, logs) is DATA_DIR/node_1; the data survives restarts.
 */
public final class LocalOpenSearch {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: LocalOpenSearch PORT DATA_DIR");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        Path base = Files.createDirectories(Path.of(args[1]).toAbsolutePath());
        // Once the node runs, System.out no longer reaches the terminal (the server takes it over),
        // so keep the original stream for our own "started" line.
        PrintStream console = System.out;
        OpenSearchRunner runner = new OpenSearchRunner();
        runner.setMaxHttpPort(-1); // take http.port as given: no scan of 9201..9299 for a free one
        runner.onBuild((index, settings) -> {
            settings.put("cluster.name", "es-message-export-opensearch");
            settings.put("network.host", "127.0.0.1");
            settings.put("http.port", port);
            settings.put("transport.port", "9400-9500"); // clear of 9300, the stack's 9.x node
            settings.put("discovery.type", "single-node");
            // Tests fill the disk's free space quickly on small machines; never go read-only.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
            settings.put("action.destructive_requires_name", false);
            settings.put("logger.level", System.getProperty("os.logger.level", "WARN"));
            // OpenSearch 2.19 logs a harmless stack trace twice per point-in-time request
            // (SearchRequestStats knows no CREATE_PIT phase): keep the log readable.
            settings.put("logger.org.opensearch.action.search.TransportSearchAction", "ERROR");
        });
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "opensearch-shutdown"));
        long t0 = System.nanoTime();
        runner.build(OpenSearchRunner.newConfigs().numOfNode(1).baseHttpPort(port - 1).basePath(base.toString()).clusterName("es-message-export-opensearch"));
        runner.ensureYellow();
        console.printf("opensearch %s started on http://127.0.0.1:%d in %.1f s%n",
            org.opensearch.Version.CURRENT, port, (System.nanoTime() - t0) / 1e9);
        console.flush();
        stopped.await();
    }
}
