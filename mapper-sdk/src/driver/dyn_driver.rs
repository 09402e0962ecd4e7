//! Object-safe drivers: what the SDK runtime holds (`Arc<dyn DynDriver>`), so
//! the runtime is not generic over one driver type, and a host that only knows
//! its configuration at run time (WebAssembly plugins) can be a driver.
//!
//! Configuration and addresses cross this boundary decoded once and erased
//! ([`ErasedConfig`], [`ErasedAddress`]); futures are boxed. Every [`Driver`]
//! is a [`DynDriver`] through a blanket adapter.

use std::any::Any;

use futures::future::BoxFuture;
use serde_json::{Map, Value as Json};

use super::{DeviceClient, DeviceState, Driver, PropertyInfo, Subscription};
use crate::config_data::from_config;
use crate::error::{DriverError, DriverResult};
use crate::value::{PropertyType, Value};

/// A decoded `protocol.configData`, opaque to the SDK.
pub struct ErasedConfig(Box<dyn Any + Send + Sync>);

impl ErasedConfig {
    /// Wraps a driver's decoded configuration.
    pub fn new<T: Any + Send + Sync>(config: T) -> Self {
        Self(Box::new(config))
    }

    /// The configuration as `T`, if it is one.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for ErasedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErasedConfig")
    }
}

/// A prepared property address, opaque to the SDK.
pub struct ErasedAddress(Box<dyn Any + Send + Sync>);

impl ErasedAddress {
    /// Wraps a driver's prepared address.
    pub fn new<T: Any + Send + Sync>(address: T) -> Self {
        Self(Box::new(address))
    }

    /// The address as `T`, if it is one.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for ErasedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErasedAddress")
    }
}

/// A decoded configuration or address and the keys it did not use (the SDK
/// warns about them).
#[derive(Debug)]
pub struct Prepared<T> {
    /// The decoded value.
    pub value: T,
    /// configData keys the driver ignored, as dotted paths.
    pub ignored: Vec<String>,
}

/// The object-safe form of [`Driver`]; see the module docs.
pub trait DynDriver: Send + Sync + 'static {
    /// Decodes `protocol.configData`.
    ///
    /// # Errors
    /// [`DriverError::Config`] naming the key.
    fn config(&self, json: &Map<String, Json>) -> DriverResult<Prepared<ErasedConfig>>;

    /// Decodes and prepares one property's `visitors.configData`.
    ///
    /// # Errors
    /// [`DriverError::Config`] naming the key or what is wrong.
    fn address(
        &self,
        json: &Map<String, Json>,
        model_type: Option<PropertyType>,
    ) -> DriverResult<Prepared<ErasedAddress>>;

    /// As [`DynDriver::address`], with more of the property (what the SDK
    /// calls when it sets a device up). The default calls
    /// [`DynDriver::address`] with the model type.
    ///
    /// # Errors
    /// As [`DynDriver::address`].
    fn property_address(
        &self,
        json: &Map<String, Json>,
        property: &PropertyInfo<'_>,
    ) -> DriverResult<Prepared<ErasedAddress>> {
        self.address(json, property.model_type)
    }

    /// Opens a device with a configuration from [`DynDriver::config`].
    fn connect<'a>(
        &'a self,
        config: &'a ErasedConfig,
    ) -> BoxFuture<'a, DriverResult<Box<dyn DynClient>>>;
}

/// The object-safe form of [`DeviceClient`]; addresses come from
/// [`DynDriver::address`] of the same driver.
pub trait DynClient: Send + Sync + 'static {
    /// As [`DeviceClient::read_batch`].
    fn read_batch<'a>(
        &'a self,
        at: &'a [&'a ErasedAddress],
    ) -> BoxFuture<'a, Vec<DriverResult<Value>>>;
    /// As [`DeviceClient::write`].
    fn write<'a>(
        &'a self,
        at: &'a ErasedAddress,
        value: &'a Value,
    ) -> BoxFuture<'a, DriverResult<()>>;
    /// As [`DeviceClient::io_requests`].
    fn io_requests(&self) -> Option<u64>;
    /// As [`DeviceClient::state`].
    fn state(&self) -> BoxFuture<'_, DeviceState>;
    /// As [`DeviceClient::subscribe`].
    fn subscribe<'a>(
        &'a self,
        at: &'a [&'a ErasedAddress],
    ) -> BoxFuture<'a, DriverResult<Option<Subscription>>>;
    /// As [`DeviceClient::disconnect`].
    fn disconnect(self: Box<Self>) -> BoxFuture<'static, ()>;
}

fn config_error(e: String) -> DriverError {
    DriverError::Config(e)
}

impl<D: Driver> DynDriver for D {
    fn config(&self, json: &Map<String, Json>) -> DriverResult<Prepared<ErasedConfig>> {
        let t = from_config::<D::Config>(json).map_err(config_error)?;
        Ok(Prepared {
            value: ErasedConfig::new(t.value),
            ignored: t.ignored,
        })
    }

    fn address(
        &self,
        json: &Map<String, Json>,
        model_type: Option<PropertyType>,
    ) -> DriverResult<Prepared<ErasedAddress>> {
        let t = from_config::<D::Address>(json).map_err(config_error)?;
        let mut addr = t.value;
        self.prepare_address(&mut addr, model_type)?;
        Ok(Prepared {
            value: ErasedAddress::new(addr),
            ignored: t.ignored,
        })
    }

    fn property_address(
        &self,
        json: &Map<String, Json>,
        property: &PropertyInfo<'_>,
    ) -> DriverResult<Prepared<ErasedAddress>> {
        let t = from_config::<D::Address>(json).map_err(config_error)?;
        let mut addr = t.value;
        self.prepare_property(&mut addr, property)?;
        Ok(Prepared {
            value: ErasedAddress::new(addr),
            ignored: t.ignored,
        })
    }

    fn connect<'a>(
        &'a self,
        config: &'a ErasedConfig,
    ) -> BoxFuture<'a, DriverResult<Box<dyn DynClient>>> {
        Box::pin(async move {
            let cfg = config.downcast_ref::<D::Config>().ok_or_else(|| {
                DriverError::Config("configuration decoded by another driver".into())
            })?;
            let client = Driver::connect(self, cfg).await?;
            Ok(Box::new(Typed(client)) as Box<dyn DynClient>)
        })
    }
}

/// A typed client behind [`DynClient`].
struct Typed<C>(C);

fn typed<'a, A: 'static>(at: &'a [&'a ErasedAddress]) -> DriverResult<Vec<&'a A>> {
    at.iter()
        .map(|a| {
            a.downcast_ref::<A>()
                .ok_or_else(|| DriverError::Config("address prepared by another driver".into()))
        })
        .collect()
}

impl<C: DeviceClient> DynClient for Typed<C> {
    fn read_batch<'a>(
        &'a self,
        at: &'a [&'a ErasedAddress],
    ) -> BoxFuture<'a, Vec<DriverResult<Value>>> {
        Box::pin(async move {
            match typed::<C::Address>(at) {
                Ok(addrs) => self.0.read_batch(&addrs).await,
                Err(e) => at.iter().map(|_| Err(e.clone())).collect(),
            }
        })
    }

    fn write<'a>(
        &'a self,
        at: &'a ErasedAddress,
        value: &'a Value,
    ) -> BoxFuture<'a, DriverResult<()>> {
        Box::pin(async move {
            let a = at
                .downcast_ref::<C::Address>()
                .ok_or_else(|| DriverError::Config("address prepared by another driver".into()))?;
            self.0.write(a, value).await
        })
    }

    fn io_requests(&self) -> Option<u64> {
        self.0.io_requests()
    }

    fn state(&self) -> BoxFuture<'_, DeviceState> {
        Box::pin(self.0.state())
    }

    fn subscribe<'a>(
        &'a self,
        at: &'a [&'a ErasedAddress],
    ) -> BoxFuture<'a, DriverResult<Option<Subscription>>> {
        Box::pin(async move {
            let addrs = typed::<C::Address>(at)?;
            self.0.subscribe(&addrs).await
        })
    }

    fn disconnect(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.0.disconnect())
    }
}
