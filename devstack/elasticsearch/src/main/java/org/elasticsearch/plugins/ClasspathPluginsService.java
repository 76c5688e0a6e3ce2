package org.elasticsearch.plugins;

import org.elasticsearch.Version;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;

import java.util.List;

/**
 * A {@link PluginsService} whose plugins are plain classes already on the classpath.
 *
 * <p>A real distribution discovers plugins/modules as directories of jars under $ES_HOME and loads each
 * one into its own module layer. We have no such directories (everything comes from Maven), so we
 * instantiate the plugin classes directly. This must live in {@code org.elasticsearch.plugins} because
 * {@link PluginsService#loadPlugin} and the {@code LoadedPlugin} record constructor are package-private.
 */
public class ClasspathPluginsService extends PluginsService {
    private final List<LoadedPlugin> plugins;

    public ClasspathPluginsService(Settings settings, Environment env, PluginsLoader emptyLoader,
                                   List<Class<? extends Plugin>> pluginClasses) {
        // The super constructor scans the (empty) loader; it finds nothing, which is what we want.
        super(settings, env.configDir(), emptyLoader);
        this.plugins = pluginClasses.stream().map(c -> load(c, settings, env)).toList();
    }

    private static LoadedPlugin load(Class<? extends Plugin> pluginClass, Settings settings, Environment env) {
        Plugin plugin = loadPlugin(pluginClass, settings, env.configDir());
        var descriptor = new PluginDescriptor(
            pluginClass.getName(),                          // name
            "classpath plugin",                             // description
            Version.CURRENT.toString(),                     // plugin version
            Version.CURRENT.toString(),                     // elasticsearch version
            Integer.toString(Runtime.version().feature()),  // java version
            pluginClass.getName(),                          // class name
            null,                                           // module name: not modular, loaded from the classpath
            List.of(),                                      // extended plugins
            false,                                          // has native controller
            false,                                          // licensed
            false,                                          // modular
            false,                                          // stable plugin API
            PluginDescriptor.DeploymentTarget.ALL
        );
        return new LoadedPlugin(descriptor, plugin, pluginClass.getClassLoader());
    }

    @Override
    protected List<LoadedPlugin> plugins() {
        return plugins;
    }
}
