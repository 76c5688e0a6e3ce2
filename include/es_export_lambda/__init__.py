"""The processing Lambda: `handler.handler` runs one batch per invoke or SQS record (no Airflow here)."""
