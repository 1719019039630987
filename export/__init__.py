"""cmhash.export: ONNX and TensorRT export of trained encoders (needs [train,export])."""
