"""Export messages from Elasticsearch to S3, tracked in MySQL.

Plain Python with no Airflow import, so the same code runs in an Airflow worker and in AWS Lambda.
Callers hand in ready clients: an Elasticsearch client, a DB-API connection, a boto3 S3 client.
"""
