"""ONNX plumbing both task families share: saving graphs with or without external data (``io``), ONNX Runtime
sessions, providers and node placement (``sessions``), and the ``torch.onnx`` export with ONNX Runtime's fusions
(``torch_export``)."""
