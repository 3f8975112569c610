"""Method plugins. Each registers a short kebab-case name in ``oneclass.registry``."""
