# A linear classifier for scikit-learn's digits (8x8 grey images, 10 classes): scikit-learn
# code that assigns an estimator (here a pipeline) to `model`. It trains online too
# (partial_fit), so it names every class: an online run's first window may lack some.
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

input_shape = [8, 8]
classes = list(range(10))
model = make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", alpha=1e-3))
