"""Model compression: fake quantization, sensitivity, bit allocation, QAT and differentiable
architecture compression."""
