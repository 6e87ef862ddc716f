# Boosted trees for scikit-learn's digits (8x8 grey images, 10 classes): XGBoost code that
# assigns an estimator to `model`. An online run adds n_estimators rounds per window.
import xgboost

input_shape = [8, 8]
classes = list(range(10))
model = xgboost.XGBClassifier(n_estimators=30, max_depth=4, learning_rate=0.3)
