"""Describes every file dropped in the `inbox` bucket, from the S3 event notification."""
import json
import os
from urllib.parse import unquote_plus

# Local buckets are folders; BUCKETS_DIR (set in function.toml) says where they are.
BUCKETS_DIR = os.environ.get('BUCKETS_DIR', '../../buckets')


def lambda_handler(event, context):
    summaries = []
    for record in event['Records']:
        bucket = record['s3']['bucket']['name']
        key = unquote_plus(record['s3']['object']['key'])
        path = os.path.join(BUCKETS_DIR, bucket, key)
        with open(path, 'rb') as f:
            data = f.read()
        text = data.decode('utf-8', errors='replace')
        lines = text.splitlines()
        summary = {
            'bucket': bucket,
            'key': key,
            'event': record['eventName'],
            'bytes': len(data),
            'lines': len(lines),
            'first_line': lines[0] if lines else '',
        }
        print(f"{context.aws_request_id}: {bucket}/{key}: {len(data)} bytes, {len(lines)} lines")
        summaries.append(summary)
    return {'files': summaries}
