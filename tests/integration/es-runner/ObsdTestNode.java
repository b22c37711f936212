/*
 * Starts one OpenSearch node in this JVM for obsd's integration tests.
 *
 * Usage: java -cp CLASSPATH ObsdTestNode.java BASE_PATH key=value...
 *
 * The runner's own main class picks the HTTP port itself (only within
 * 9201-9299, probing "localhost") and takes no node settings, so this launcher
 * uses its API instead: every key=value argument becomes a node setting, which
 * lets the Python fixture choose the port, bind address and disk thresholds.
 * SIGTERM runs the shutdown hook, which closes the node cleanly.  With
 * -Dobsd.exitOnStdinEof=true the node also exits when its stdin closes, so a
 * test run that dies without stopping it does not leave a JVM behind.
 */
import java.util.concurrent.CountDownLatch;

import org.codelibs.opensearch.runner.OpenSearchRunner;

public class ObsdTestNode {
    public static void main(final String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: ObsdTestNode BASE_PATH key=value...");
            System.exit(2);
        }
        final OpenSearchRunner runner = new OpenSearchRunner();
        final CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }));
        if (Boolean.getBoolean("obsd.exitOnStdinEof")) {
            final Thread watch = new Thread(() -> {
                try {
                    while (System.in.read() != -1) {
                        // the parent writes nothing; EOF means it is gone
                    }
                } catch (final java.io.IOException e) {
                    // treat a broken pipe like EOF
                }
                System.exit(0);
            }, "obsd-stdin-watch");
            watch.setDaemon(true);
            watch.start();
        }
        runner.setMaxHttpPort(-1);
        runner.onBuild((index, settings) -> {
            for (int i = 1; i < args.length; i++) {
                final int eq = args[i].indexOf('=');
                if (eq <= 0) {
                    throw new IllegalArgumentException("not key=value: " + args[i]);
                }
                settings.put(args[i].substring(0, eq), args[i].substring(eq + 1));
            }
        });
        try {
            runner.build(OpenSearchRunner.newConfigs()
                    .basePath(args[0])
                    .numOfNode(1)
                    .clusterName("obsd-test")
                    .build());
        } catch (final Exception e) {
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("obsd-test-node: started");
        closed.await();
    }
}
