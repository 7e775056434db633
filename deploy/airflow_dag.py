"""Nightly videorec ingest on Dataflow, scheduled by Airflow (the alternative to Cloud Scheduler).

Copy this file into the DAGs folder of an Airflow (or Cloud Composer) environment that has the Google
provider (``apache-airflow-providers-google``), and set these Airflow Variables (Admin > Variables):

- ``videorec_project``, ``videorec_region``: where the job runs;
- ``videorec_template_path``: the template spec, ``gs://BUCKET/templates/videorec-ingest.json``;
- ``videorec_image``: the image deploy/build_template.sh built (the workers run it too);
- ``videorec_bucket``: bucket for Dataflow staging and temp files;
- ``videorec_service_account``: service account of the launcher and the workers;
- ``videorec_interactions``, ``videorec_videos``: the ingest inputs;
- ``videorec_dataset_root``: the dataset root each run adds a version to and publishes ``LATEST`` in.

Values are read when the task runs (Jinja templates), not when the scheduler parses this file.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

LAUNCH_BODY = {
    "launchParameter": {
        "jobName": "videorec-nightly-ingest",
        "containerSpecGcsPath": "{{ var.value.videorec_template_path }}",
        "parameters": {
            "interactions": "{{ var.value.videorec_interactions }}",
            "videos": "{{ var.value.videorec_videos }}",
            "dataset_root": "{{ var.value.videorec_dataset_root }}",
            "keep": "7",
            "sdk_container_image": "{{ var.value.videorec_image }}",
        },
        "environment": {
            "stagingLocation": "gs://{{ var.value.videorec_bucket }}/staging",
            "tempLocation": "gs://{{ var.value.videorec_bucket }}/temp",
            "serviceAccountEmail": "{{ var.value.videorec_service_account }}",
            "maxWorkers": 20,
            "machineType": "n2-standard-4",
        },
    }
}

with DAG(
    dag_id="videorec_nightly_ingest",
    description="Re-ingest new and changed videos and interactions into the videorec dataset",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=15)},
    tags=["videorec", "dataflow"],
) as dag:
    DataflowStartFlexTemplateOperator(
        task_id="ingest",
        project_id="{{ var.value.videorec_project }}",
        location="{{ var.value.videorec_region }}",
        body=LAUNCH_BODY,
        wait_until_finished=True,
        append_job_name=True,
    )
