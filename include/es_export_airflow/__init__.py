"""The Airflow edge of the export: only DAG files and the plugin import this; the core package
`es_export` never imports Airflow.

    connections  Airflow connections -> Elasticsearch, MySQL and S3 clients
    settings     the Variable es_message_export_config, the trigger params
    tasks        what the DAGs' tasks share (failing fast, batch labels)
    dispatch     running a batch here, in the Lambda, or through SQS; waiting for other runs
    alerts       late runs (Deadline Alert) and dead messages (log line, SNS)
    metrics      StatsD counters of each batch
    run_mirror   the listener that mirrors Airflow runs into job_runs
    status_page  the export status page on the api-server
"""
