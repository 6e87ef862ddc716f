"""Inference: a trained model served as a Ray Serve application that consumes an input
topic and writes predictions to an output topic (`app`), with the model side (`predictor`),
its options (`options`), the spec read from the store (`spec`), the lag autoscaling policy
(`autoscale`), deploying and stopping (`deploy`) and the ``infer`` commands (`cli`)."""
