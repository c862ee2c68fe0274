//! SSM Parameter Store SecureStrings: the [`Secrets`] port (a temporary instance's master
//! password, kept exactly as long as the instance lives).

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterType;
use aws_sdk_ssm::Client;
use bunker_actors::ports::{ErrorKind, PortError, Secrets};

use super::{client, port_error, CallHealth};

/// The parameters of one region.
pub struct SsmSecrets {
    client: Client,
}

impl SsmSecrets {
    /// The parameters of the region `conf` is for.
    pub fn new(conf: &SdkConfig, calls: &CallHealth) -> SsmSecrets {
        SsmSecrets { client: client!(aws_sdk_ssm, conf, calls) }
    }
}

#[async_trait]
impl Secrets for SsmSecrets {
    async fn put(&self, name: &str, value: &str, kms_key: Option<&str>) -> Result<(), PortError> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .set_key_id(kms_key.map(String::from))
            .overwrite(true)
            .description("bunker: master password of a temporary dump instance")
            .send()
            .await
            .map_err(|e| port_error("ssm:PutParameter", e))?;
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<String>, PortError> {
        match self.client.get_parameter().name(name).with_decryption(true).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(String::from)),
            Err(e) => match port_error("ssm:GetParameter", e) {
                e if e.kind == ErrorKind::NotFound => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn delete(&self, name: &str) -> Result<(), PortError> {
        match self.client.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) => match port_error("ssm:DeleteParameter", e) {
                e if e.kind == ErrorKind::NotFound => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn under(&self, path: &str) -> Result<Vec<String>, PortError> {
        let mut names = Vec::new();
        let mut pages = self.client.get_parameters_by_path().path(path).recursive(true).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| port_error("ssm:GetParametersByPath", e))?;
            names.extend(page.parameters().iter().filter_map(|p| p.name().map(String::from)));
        }
        Ok(names)
    }
}
