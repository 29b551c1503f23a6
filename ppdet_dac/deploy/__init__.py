"""Deployment: export to Paddle Inference, the predictor shared by the infer tools and the
service, sliced inference, drawing. Reads models and weight files; never trains."""
