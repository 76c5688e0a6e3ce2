package org.elasticsearch.plugins;

import org.elasticsearch.common.settings.Settings;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Plugins loaded from the classpath instead of a plugins/ directory of installed bundles.
 * It lives in org.elasticsearch.plugins because LoadedPlugin and loadPlugin are package-private.
 */
public class ClasspathPluginsService extends PluginsService {
    private final List<LoadedPlugin> classpathPlugins;

    public ClasspathPluginsService(Settings settings, Path configDir, PluginsLoader loader,
                                   List<Class<? extends Plugin>> pluginClasses) {
        super(settings, configDir, loader);
        List<LoadedPlugin> loaded = new ArrayList<>();
        for (Class<? extends Plugin> pluginClass : pluginClasses) {
            Plugin instance = loadPlugin(pluginClass, settings, configDir);
            PluginDescriptor descriptor = new PluginDescriptor(pluginClass.getSimpleName(), "loaded from the classpath",
                "0", org.elasticsearch.Build.current().version(), "17", pluginClass.getName(), null, List.of(),
                false, false, false, false);
            loaded.add(new LoadedPlugin(descriptor, instance, pluginClass.getClassLoader()));
        }
        this.classpathPlugins = List.copyOf(loaded);
    }

    @Override
    protected List<LoadedPlugin> plugins() {
        // Called by the superclass constructor before our field is set: no plugins yet then.
        return classpathPlugins == null ? List.of() : classpathPlugins;
    }
}
