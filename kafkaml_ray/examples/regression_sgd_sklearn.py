# A linear regressor over 26 features (the paper's CEPSA virtual analyser shape): scikit-learn
# code that assigns an estimator (here a pipeline) to `model`; it trains online too.
from sklearn.linear_model import SGDRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

input_shape = [26]
model = make_pipeline(StandardScaler(), SGDRegressor(alpha=1e-4))
