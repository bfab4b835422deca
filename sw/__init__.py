"""Host-side software, in three layers: ``formats`` (a), ``contract`` (b), ``host`` (c)."""
