"""The Airflow edge of the export: only DAG files and the plugin import this; the core package
`es_export` never imports Airflow. In layers, each importing only the ones below it:

    planning     the first tasks of the DAGs: settle, open the job, extract or find changes, plan, hand out
    reconciling  the last tasks: wait for other runs, reconcile, announce; retry and refresh summaries; purge
    batch_sensor the mapped `process` sensor and its poke in every dispatch mode
    dispatch     a batch sent to the processing Lambda (invoke) or its SQS queue
    alerts       late runs (Deadline Alert), failed runs and dead messages (log line, SNS)
    triggers     the sqs wait in the triggerer
    settings     the Variable es_message_export_config, the trigger params, parse-time settings
    connections  Airflow connections -> Elasticsearch, MySQL and S3 clients
    failures     core errors retrying cannot fix -> Airflow's fail-without-retry
    metrics      StatsD counters of each batch
    assets       the exported days as asset events
    run_mirror   the listener that mirrors Airflow runs into job_runs (plugin)
    status_page  the export status page on the api-server (plugin)
"""
