-- One PostgreSQL for both servers: the MLflow backend store is POSTGRES_DB (mlflow),
-- the Prefect server gets its own database.
CREATE DATABASE prefect;
