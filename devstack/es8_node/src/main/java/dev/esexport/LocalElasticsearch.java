package dev.esexport;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.ClasspathNode;
import org.elasticsearch.node.Node;
import org.elasticsearch.transport.netty4.Netty4Plugin;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;

/**
 * A single-node Elasticsearch for local development and tests, bound to 127.0.0.1.
 * Usage: LocalElasticsearch --home DIR [--port 9250]  (Elasticsearch 8.x)
 */
public final class LocalElasticsearch {
    public static void main(String[] args) throws Exception {
        Path home = null;
        int port = 9250; // not 9200: that is the 9.x node of the local stack
        for (int i = 0; i < args.length - 1; i += 2) {
            switch (args[i]) {
                case "--home" -> home = Path.of(args[i + 1]).toAbsolutePath();
                case "--port" -> port = Integer.parseInt(args[i + 1]);
                default -> throw new IllegalArgumentException("unknown option " + args[i] + "; use --home DIR --port N");
            }
        }
        if (home == null) throw new IllegalArgumentException("--home DIR is required");
        Path config = Files.createDirectories(home.resolve("config"));
        Settings settings = Settings.builder()
            .put("cluster.name", "es-message-export-es8")
            .put("node.name", "local")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("network.host", "127.0.0.1")
            .put("http.port", port)
            .put("transport.port", "9400-9500") // clear of 9300, the stack's 9.x node
            .put("discovery.type", "single-node")
            // Tests fill the disk's free space quickly on small machines; never go read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.destructive_requires_name", false)
            .put("logger.level", System.getProperty("es.logger.level", "WARN"))
            .build();
        // What the distribution's bootstrap does before anything logs: install Elasticsearch's
        // logging provider, then a plain console configuration (no log4j2.properties needed).
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName("local");
        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);
        Node node = new ClasspathNode(new Environment(settings, config), List.of(Netty4Plugin.class, RootInfoPlugin.class));
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "es-shutdown"));
        node.start();
        System.out.println("elasticsearch " + org.elasticsearch.Build.current().version() + " started on http://127.0.0.1:" + port);
        stopped.await();
    }
}
