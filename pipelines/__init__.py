"""Apache Beam pipelines: thin PTransforms over the bltdata library."""
