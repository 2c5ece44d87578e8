# Bake an AMI with taskfleet installed, so instances boot straight into the
# worker instead of installing Python and the project first.
#
#   git archive --format=zip -o /tmp/taskfleet-source.zip HEAD
#   packer init image/worker.pkr.hcl
#   packer build -var region=eu-west-1 image/worker.pkr.hcl
#
# Then deploy with the image: cdk deploy -c taskfleet:amiId=ami-...
packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

variable "region" {
  type = string
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "source_zip" {
  type    = string
  default = "/tmp/taskfleet-source.zip"
}

source "amazon-ebs" "worker" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = "ec2-user"
  ami_name      = "taskfleet-worker-{{timestamp}}"
  source_ami_filter {
    filters = {
      name                = "al2023-ami-2023.*-x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["amazon"]
    most_recent = true
  }
  metadata_options {
    http_tokens = "required"
  }
}

build {
  sources = ["source.amazon-ebs.worker"]

  provisioner "file" {
    source      = var.source_zip
    destination = "/tmp/taskfleet-source.zip"
  }

  provisioner "shell" {
    inline = [
      "sudo dnf install -y unzip",
      "mkdir -p /tmp/taskfleet-source && unzip -q /tmp/taskfleet-source.zip -d /tmp/taskfleet-source",
      "sudo bash /tmp/taskfleet-source/image/install.sh /tmp/taskfleet-source",
      "rm -rf /tmp/taskfleet-source /tmp/taskfleet-source.zip",
    ]
  }
}
