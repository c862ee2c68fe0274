#!/usr/bin/env python3
"""Seeds the local emulator with a small fleet of all six kinds (for the demo).

Uses boto3 from the emulator's venv; endpoint and credentials come from the environment
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Prints what it made.
"""
import boto3

SELECT = {"Key": "bunker:create_backup", "Value": "true"}


def main() -> None:
    ec2 = boto3.client("ec2")
    made = []
    for name, extra in [("app-data", []), ("logs", [{"Key": "bunker:config:keep_daily", "Value": "3"}]), ("scratch", None)]:
        tags = [{"Key": "Name", "Value": name}] + ([SELECT] + extra if extra is not None else [])
        v = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8, TagSpecifications=[{"ResourceType": "volume", "Tags": tags}])
        made.append(f"ebs volume {v['VolumeId']} ({name}{', not tagged for backup' if extra is None else ''}{', keep_daily=3 by tag' if extra else ''})")
    i = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": [SELECT, {"Key": "Name", "Value": "web-1"}]}])
    made.append(f"ec2 instance {i['Instances'][0]['InstanceId']} (web-1)")
    rds = boto3.client("rds")
    rds.create_db_instance(DBInstanceIdentifier="orders-db", Engine="postgres", DBInstanceClass="db.t3.micro",
                           MasterUsername="admin", MasterUserPassword="password123", AllocatedStorage=20, Tags=[SELECT])
    made.append("rds instance orders-db")
    rds.create_db_cluster(DBClusterIdentifier="billing-aurora", Engine="aurora-postgresql", MasterUsername="admin",
                          MasterUserPassword="password123", Tags=[SELECT])
    made.append("aurora cluster billing-aurora")
    boto3.client("docdb").create_db_cluster(DBClusterIdentifier="catalog-docdb", Engine="docdb", MasterUsername="admin",
                                            MasterUserPassword="password123", Tags=[SELECT])
    made.append("documentdb cluster catalog-docdb (via bunker's emulator plugin)")
    boto3.client("redshift").create_cluster(ClusterIdentifier="analytics", NodeType="dc2.large", MasterUsername="admin",
                                            MasterUserPassword="Password123", Tags=[SELECT])
    made.append("redshift cluster analytics")
    for m in made:
        print(f"  seeded {m}")


if __name__ == "__main__":
    main()
