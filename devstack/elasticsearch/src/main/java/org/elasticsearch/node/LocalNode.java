package org.elasticsearch.node;

import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.ClasspathPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A {@link Node} whose plugins come from the classpath instead of $ES_HOME/modules and $ES_HOME/plugins.
 *
 * <p>This class lives in {@code org.elasticsearch.node} because the hooks we need are package-private:
 * {@code Node(NodeConstruction)}, {@code NodeConstruction.prepareConstruction(...)} and
 * {@code NodeServiceProvider.newPluginService(...)} (the same seam Elasticsearch's own test framework uses).
 * We run on the plain classpath (not the module path), so split packages are not a problem.
 */
public class LocalNode extends Node {

    public LocalNode(Environment env, List<Class<? extends Plugin>> pluginClasses) {
        this(env, PluginsLoader.createPluginsLoader(Set.of(), Set.of(), Map.of(), false), pluginClasses);
    }

    private LocalNode(Environment env, PluginsLoader emptyLoader, List<Class<? extends Plugin>> pluginClasses) {
        super(NodeConstruction.prepareConstruction(env, emptyLoader, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment environment, PluginsLoader loader) {
                return new ClasspathPluginsService(environment.settings(), environment, loader, pluginClasses);
            }
        }, true /* forbidPrivateIndexSettings, as in production */));
    }
}
