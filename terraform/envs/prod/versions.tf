terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.4"
    }
  }

  # State lives in a GCS bucket you create once (docs/deploy.md):
  #   terraform init -backend-config="bucket=<state-bucket>" -backend-config="prefix=truecount/prod"
  backend "gcs" {}
}
