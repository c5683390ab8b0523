"""`deploybench compare`: the matrix config, the saturation search, the driver of real targets and load, and
the per-choice pipeline. The results are a compare document (``deploybench.compare_doc``)."""
