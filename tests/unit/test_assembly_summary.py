"""The summary `make demo` prints, from a cloud assembly."""

from __future__ import annotations

import json
from pathlib import Path

from spothub.assembly_summary import api_routes, render, summarize
from spothub.cli import main


def write_assembly(root: Path) -> None:
    resources = {
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {}},
        "Spot": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {"ParentId": {"Fn::GetAtt": ["Api", "RootResourceId"]}, "PathPart": "spot"},
        },
        "SpotId": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {"ParentId": {"Ref": "Spot"}, "PathPart": "{id}"},
        },
        "GetSpot": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {"HttpMethod": "GET", "ResourceId": {"Ref": "SpotId"}, "AuthorizationType": "AWS_IAM"},
        },
        "PostSpot": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {"HttpMethod": "POST", "ResourceId": {"Ref": "Spot"}},
        },
        "Root": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {"HttpMethod": "GET", "ResourceId": {"Fn::GetAtt": ["Api", "RootResourceId"]}},
        },
        "Topic": {
            "Type": "AWS::SNS::Topic",
            "Metadata": {
                "cdk_nag": {
                    "rules_to_suppress": [
                        {"id": "AwsSolutions-SNS3", "reason": "why"},
                        {"id": "CloudFormation-Validate::W3010", "reason": "written by aws-cdk-lib, not cdk-nag"},
                    ]
                }
            },
        },
    }
    (root / "Hub.template.json").write_text(json.dumps({"Resources": resources}))
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "artifacts": {
                    "Hub": {
                        "type": "aws:cloudformation:stack",
                        "environment": "aws://unknown-account/us-east-1",
                        "properties": {"templateFile": "Hub.template.json", "stackName": "spothub-hub"},
                    },
                    "Tree": {"type": "cdk:tree"},
                }
            }
        )
    )


def test_routes_are_rebuilt_from_the_resource_tree(tmp_path: Path) -> None:
    write_assembly(tmp_path)
    resources = json.loads((tmp_path / "Hub.template.json").read_text())["Resources"]
    assert api_routes(resources) == [("GET", "/", "NONE"), ("POST", "/spot", "NONE"), ("GET", "/spot/{id}", "AWS_IAM")]


def test_summary_counts_resources_per_stack_and_region(tmp_path: Path) -> None:
    write_assembly(tmp_path)
    (summary,) = summarize(tmp_path)
    assert (summary.stack_name, summary.region, summary.resource_count) == ("spothub-hub", "us-east-1", 7)
    text = render([summary])
    assert "1 stacks in 1 regions" in text
    assert "spothub-hub  (us-east-1, 7 resources, 1 cdk-nag findings acknowledged with reasons)" in text
    assert f"    {'POST':6s} {'/spot':30s} NONE\n" in text
    assert f"    {'GET':6s} {'/spot/{id}':30s} AWS_IAM\n" in text


def test_cli_says_what_to_do_without_an_assembly(tmp_path: Path, capsys) -> None:
    assert main(["summary", "--cdk-out", str(tmp_path)]) == 2
    assert "run the synth first" in capsys.readouterr().err


def test_cli_help_works(capsys) -> None:
    assert main([]) == 0
    assert "summary" in capsys.readouterr().out
