"""The network test bed: two namespaces, ``ftl serve``, a fault-injecting proxy."""
