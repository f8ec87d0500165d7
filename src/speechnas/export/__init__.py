"""Deployment: ONNX export with parity checks, int8 quantisation, the standalone transcriber."""
