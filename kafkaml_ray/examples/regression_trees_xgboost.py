# Boosted trees over 26 features (the paper's CEPSA virtual analyser shape): XGBoost code
# that assigns an estimator to `model`.
import xgboost

input_shape = [26]
model = xgboost.XGBRegressor(n_estimators=50, max_depth=4, learning_rate=0.2)
